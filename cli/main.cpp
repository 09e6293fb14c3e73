// nixfleet: the operator CLI.
#include "nixfleet/cli/commands.hpp"

int main(int argc, char** argv) { return nixfleet::cli::run(argc, argv); }
