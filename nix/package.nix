# The nixfleet package: the three binaries, the probe host and the example plugin, built and tested
# with the same CMake presets and ctest as CI (the `release` preset; tests that need Nix itself,
# root or the network are left to CI and the VM tests).
{ lib
, stdenv
, cmake
, ninja
, pkg-config
, boost
, liburing
, openssl
, sqlite
, spdlog
, fmt
, cli11
, openssh
}:

stdenv.mkDerivation {
  pname = "nixfleet";
  version = "0.1.0";

  src = lib.fileset.toSource {
    root = ./..;
    fileset = lib.fileset.unions [
      ../CMakeLists.txt
      ../CMakePresets.json
      ../cmake
      ../common
      ../protocol
      ../health
      ../agent
      ../coordinator
      ../cli
      ../tests
      ../integration/bench
    ];
  };

  nativeBuildInputs = [ cmake ninja pkg-config ];
  buildInputs = [ boost liburing openssl sqlite spdlog fmt cli11 ];
  nativeCheckInputs = [ openssl openssh ];

  dontUseCmakeConfigure = true;
  configurePhase = ''
    runHook preConfigure
    cmake --preset release -DCMAKE_INSTALL_PREFIX=$out -DNIXFLEET_CCACHE=OFF
    runHook postConfigure
  '';
  buildPhase = ''
    runHook preBuild
    cmake --build --preset release --parallel $NIX_BUILD_CORES
    runHook postBuild
  '';
  doCheck = true;
  checkPhase = ''
    runHook preCheck
    ctest --preset release --label-exclude nix
    runHook postCheck
  '';
  installPhase = ''
    runHook preInstall
    cmake --install build/release
    runHook postInstall
  '';

  meta = {
    description = "Deploys NixOS fleets: signed releases, waved rollouts, health-gated activation and automatic rollback";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
    mainProgram = "nixfleet";
  };
}
