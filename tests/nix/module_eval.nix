# Evaluates the NixOS modules with nixpkgs' real `lib` (its module system and types) against
# declarations of the NixOS options they set, typed as NixOS declares them, and returns what a
# host would get: failed assertions, warnings, the rendered units and /etc files. Read-only pkgs:
# `nixpkgs.*` is declared read-only, as nixos/modules/misc/nixpkgs/read-only.nix does, so a module
# that sets it fails to evaluate. Used by nix_files_test.sh:
#   nix-instantiate --eval --strict --json tests/nix/module_eval.nix --arg lib … --argstr module agent --arg config …
{ lib, src, module, config }:
let
  inherit (lib) mkOption types;

  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  # The module arguments a NixOS system provides: a pkgs that can only build stand-ins, and
  # nixos/lib/utils.nix's systemd escaping (each argument JSON-quoted, `%` and `$` doubled).
  pkgs = {
    callPackage = _: _: fakePackage "nixfleet";
    writeShellScriptBin = name: _: fakePackage name;
  };
  utils = {
    escapeSystemdExecArg = arg:
      let s = if builtins.isString arg then arg else toString arg;
      in builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
    escapeSystemdExecArgs = args: lib.concatMapStringsSep " " utils.escapeSystemdExecArg args;
  };

  unitOption = types.oneOf [ types.bool types.int types.str types.path (types.listOf (types.oneOf [ types.str types.int types.bool ])) ];

  nixos = {
    options = {
      assertions = mkOption {
        type = types.listOf (types.submodule { options = { assertion = mkOption { type = types.bool; }; message = mkOption { type = types.str; }; }; });
        default = [ ];
      };
      warnings = mkOption { type = types.listOf types.str; default = [ ]; };
      nixpkgs = mkOption {
        type = types.attrs;
        default = { };
        readOnly = true;
        description = "read-only pkgs: no module may set nixpkgs.*";
      };
      networking.hostName = mkOption { type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$"; default = "nixos"; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            text = mkOption { type = types.nullOr types.lines; default = null; };
            source = mkOption { type = types.nullOr types.str; default = null; };
            mode = mkOption { type = types.str; default = "symlink"; };
          };
        });
        default = { };
      };
      nix.package = mkOption { type = types.package; default = fakePackage "nix"; };
      systemd.package = mkOption { type = types.package; default = fakePackage "systemd"; };
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            description = mkOption { type = types.str; default = ""; };
            wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
            wants = mkOption { type = types.listOf types.str; default = [ ]; };
            after = mkOption { type = types.listOf types.str; default = [ ]; };
            path = mkOption { type = types.listOf types.package; default = [ ]; };
            restartIfChanged = mkOption { type = types.bool; default = true; };
            stopIfChanged = mkOption { type = types.bool; default = true; };
            serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
          };
        });
        default = { };
      };
    };
  };

  eval = lib.evalModules {
    modules = [ nixos (src + "/${module}/module.nix") config ];
    specialArgs = { inherit pkgs utils; };
  };
  c = eval.config;
in
{
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  warnings = c.warnings;
  etc = builtins.mapAttrs (_: f: f.text) (lib.filterAttrs (_: f: f.text != null) c.environment.etc);
  units = builtins.mapAttrs (_: u: {
    inherit (u) wantedBy after restartIfChanged stopIfChanged serviceConfig;
  }) c.systemd.services;
  ports = c.networking.firewall.allowedTCPPorts;
  # Forces the read-only option: a module that defines nixpkgs.* fails here.
  pkgsUntouched = builtins.deepSeq c.nixpkgs true;
}
