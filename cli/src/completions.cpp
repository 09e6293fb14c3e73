// Shell completion scripts generated from the CLI11 command tree, so they never drift from it.
#include "nixfleet/cli/commands.hpp"

#include <CLI/CLI.hpp>

#include <sstream>
#include <vector>

namespace nixfleet::cli {

namespace {

struct node {
  std::string path;  // " release create"
  std::vector<std::string> subcommands;
  std::vector<std::string> options;
};

void walk(const CLI::App& app, const std::string& path, std::vector<node>& out) {
  node n{path, {}, {}};
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) n.subcommands.push_back(sub->get_name());
  for (const CLI::Option* o : app.get_options())
    for (const auto& l : o->get_lnames()) n.options.push_back("--" + l);
  out.push_back(n);
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    walk(*sub, path + " " + sub->get_name(), out);
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : " ") + x;
  return s;
}

std::string bash(const std::vector<node>& nodes) {
  std::ostringstream o;
  o << "# bash completion for nixfleet\n_nixfleet() {\n"
       "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" path=\"\" w i words\n"
       "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
       "    w=\"${COMP_WORDS[i]}\"\n"
       "    case \"$path $w\" in\n";
  for (const auto& n : nodes)
    if (!n.path.empty()) o << "      \"" << n.path << "\") path=\"$path $w\" ;;\n";
  o << "    esac\n  done\n  case \"$path\" in\n";
  for (const auto& n : nodes) {
    auto words = n.subcommands;
    words.insert(words.end(), n.options.begin(), n.options.end());
    o << "    \"" << n.path << "\") words=\"" << join(words) << "\" ;;\n";
  }
  o << "  esac\n  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n}\ncomplete -F _nixfleet nixfleet\n";
  return o.str();
}

std::string fish(const std::vector<node>& nodes) {
  std::ostringstream o;
  o << "# fish completion for nixfleet\n";
  for (const auto& n : nodes) {
    std::string last = n.path.empty() ? "" : n.path.substr(n.path.rfind(' ') + 1);
    std::string cond = n.path.empty() ? "__fish_use_subcommand" : "__fish_seen_subcommand_from " + last;
    for (const auto& s : n.subcommands) o << "complete -c nixfleet -f -n '" << cond << "' -a " << s << "\n";
    for (const auto& opt : n.options) o << "complete -c nixfleet -n '" << cond << "' -l " << opt.substr(2) << "\n";
  }
  return o.str();
}

}  // namespace

std::string completion_script(const CLI::App& app, const std::string& shell) {
  std::vector<node> nodes;
  walk(app, "", nodes);
  if (shell == "fish") return fish(nodes);
  if (shell == "zsh") return "#compdef nixfleet\nautoload -U +X bashcompinit && bashcompinit\n" + bash(nodes);
  return bash(nodes);
}

}  // namespace nixfleet::cli
