# Stand-ins for a NixOS system, for evaluating our modules (and real third-party ones) with
# nixpkgs' real `lib` and no nixpkgs: the options they set, declared with the types NixOS gives
# them; a `nixpkgs` option that is read-only (nixos/modules/misc/nixpkgs/read-only.nix); the
# module arguments `pkgs` (stand-in packages) and `utils` (nixos/lib/utils.nix's helpers).
{ lib }:
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
    # Our package (it wants a stdenv) is a stand-in; small Nix libraries (impermanence's lib.nix)
    # are called for real with `lib`.
    callPackage = f: args:
      let fn = if builtins.isFunction f then f else import f;
      in if (builtins.functionArgs fn) ? stdenv then fakePackage "nixfleet"
         else fn (builtins.intersectAttrs (builtins.functionArgs fn) { inherit lib; } // args);
    writeShellScriptBin = name: _: fakePackage name;
    writeShellScript = name: _: fakePackage name;
    runCommand = name: _: _: fakePackage name;
    bash = fakePackage "bash";
    util-linux = fakePackage "util-linux";
  };
  utils = {
    escapeSystemdExecArg = arg:
      let s = if builtins.isString arg then arg else toString arg;
      in builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
    escapeSystemdExecArgs = args: lib.concatMapStringsSep " " utils.escapeSystemdExecArg args;
    # As nixos/lib/utils.nix: the mount points that must be mounted in the initrd.
    pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];
    escapeSystemdPath = path:
      builtins.replaceStrings [ "/" "-" " " ] [ "-" "\\x2d" "\\x20" ] (lib.removePrefix "/" path);
  };

  # As nixos/lib/systemd-unit-options.nix: list definitions concatenate, others must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs;
      in if builtins.isList (builtins.head defs').value then builtins.concatMap (d: d.value) defs'
         else lib.mergeEqualOption loc defs';
  };
  # ... and its check of [Service]: Type and Restart take only systemd's values.
  checkService = cfg:
    builtins.elem (cfg.Type or "simple") [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "idle" ]
    && builtins.elem (cfg.Restart or "no") [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "always" ];
  # The unit file NixOS writes (nixos/modules/system/boot/systemd.nix): [Unit] with the
  # X-RestartIfChanged / X-StopIfChanged markers switch-to-configuration reads, then [Service].
  render = section: attrs: "[${section}]\n" + lib.concatStrings (lib.mapAttrsToList (k: v:
    lib.concatMapStrings (x: "${k}=${if builtins.isBool x then lib.boolToString x else toString x}\n")
      (if builtins.isList v then v else [ v ])) attrs);

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
      fileSystems = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            device = mkOption { type = types.nullOr types.str; default = null; };
            fsType = mkOption { type = types.str; default = "auto"; };
            options = mkOption { type = types.listOf types.str; default = [ "defaults" ]; };
            neededForBoot = mkOption { type = types.bool; default = false; };
          };
        });
        default = { };
      };
      users.users = mkOption {
        type = types.attrsOf (types.submodule {
          freeformType = types.attrsOf types.anything;
          options.home = mkOption { type = types.str; default = "/var/empty"; };
          options.uid = mkOption { type = types.nullOr types.int; default = null; };
        });
        default = { };
      };
      users.groups = mkOption {
        type = types.attrsOf (types.submodule {
          freeformType = types.attrsOf types.anything;
          options.gid = mkOption { type = types.nullOr types.int; default = null; };
        });
        default = { };
      };
      nix.package = mkOption { type = types.package; default = fakePackage "nix"; };
      systemd.package = mkOption { type = types.package; default = fakePackage "systemd"; };
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule ({ config, ... }: {
          options = {
            description = mkOption { type = types.str; default = ""; };
            wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
            wants = mkOption { type = types.listOf types.str; default = [ ]; };
            after = mkOption { type = types.listOf types.str; default = [ ]; };
            path = mkOption { type = types.listOf types.package; default = [ ]; };
            restartIfChanged = mkOption { type = types.bool; default = true; };
            stopIfChanged = mkOption { type = types.bool; default = true; };
            unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
            serviceConfig = mkOption { type = types.addCheck (types.attrsOf unitOption) checkService; default = { }; };
            text = mkOption { type = types.str; readOnly = true; };
          };
          config.text = render "Unit" (config.unitConfig
            // lib.optionalAttrs (config.description != "") { Description = config.description; }
            // lib.optionalAttrs (!config.restartIfChanged) { X-RestartIfChanged = false; }
            // lib.optionalAttrs (!config.stopIfChanged) { X-StopIfChanged = false; })
            + render "Service" config.serviceConfig;
        }));
        default = { };
      };
    };
  };

in
{ inherit nixos pkgs utils fakePackage; }
