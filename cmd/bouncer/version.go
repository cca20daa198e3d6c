package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is set at link time by "make release"
// (-ldflags "-X main.version=v1.2.3"); empty, the module version from
// the build info is used. It is the one package variable of the binary,
// written only by the linker.
var version string

// versionCmd prints one line: the version, the VCS revision and time the
// binary was built from (when the go command stamped them), the Go
// version and the platform.
func (a *app) versionCmd(args []string) error {
	fs := newFlags("version", "version", a.stderr)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("version: unexpected argument %q", pos[0])
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprintln(a.stdout, versionLine(bi, version))
	return nil
}

// versionLine renders the build info: "bouncer v1.2.3 (revision
// 0123456789ab, 2026-12-01T10:00:00Z, modified) go1.26.8 linux/amd64".
// stamped, when not empty, wins over the module version. bi may be nil.
func versionLine(bi *debug.BuildInfo, stamped string) string {
	v, goVersion := stamped, runtime.Version()
	var rev, when string
	modified := false
	if bi != nil {
		if v == "" {
			v = bi.Main.Version
		}
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	var vcs []string
	if rev != "" {
		vcs = append(vcs, "revision "+rev[:min(len(rev), 12)])
	}
	if when != "" {
		vcs = append(vcs, when)
	}
	if modified {
		vcs = append(vcs, "modified")
	}
	line := "bouncer " + v
	if len(vcs) > 0 {
		line += " (" + strings.Join(vcs, ", ") + ")"
	}
	return line + " " + goVersion + " " + runtime.GOOS + "/" + runtime.GOARCH
}
