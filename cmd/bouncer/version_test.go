package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionLine(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/bouncer/bouncer", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		}}
	plat := " " + runtime.GOOS + "/" + runtime.GOARCH
	for _, c := range []struct {
		bi      *debug.BuildInfo
		stamped string
		want    string
	}{
		{bi, "", "bouncer v1.2.3 (revision 0123456789ab, 2026-12-01T10:00:00Z, modified) go1.26.8" + plat},
		{bi, "v9.0.0", "bouncer v9.0.0 (revision 0123456789ab, 2026-12-01T10:00:00Z, modified) go1.26.8" + plat},
		{&debug.BuildInfo{GoVersion: "go1.26.8"}, "", "bouncer (devel) go1.26.8" + plat},
		{nil, "", "bouncer (devel) " + runtime.Version() + plat},
	} {
		if got := versionLine(c.bi, c.stamped); got != c.want {
			t.Errorf("versionLine(%q):\ngot  %s\nwant %s", c.stamped, got, c.want)
		}
	}
}

func TestVersionCommand(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		out, code := runCLI(t, args...)
		if code != 0 || !strings.HasPrefix(out, "bouncer ") || !strings.Contains(out, runtime.GOOS+"/"+runtime.GOARCH) {
			t.Errorf("bouncer %v: exit %d, %q", args, code, out)
		}
	}
	if _, code := runCLI(t, "version", "extra"); code != 2 {
		t.Errorf("version with an argument: exit %d, want 2", code)
	}
}

// TestVersionStamped builds the binary as "make release" does, with the
// version set at link time, and runs "bouncer --version".
func TestVersionStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	bin := filepath.Join(t.TempDir(), "bouncer")
	build := exec.Command(goBin, "build", "-ldflags", "-X main.version=v9.9.9-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	tcheck(t, err, "bouncer --version")
	if !strings.HasPrefix(string(out), "bouncer v9.9.9-test ") {
		t.Errorf("bouncer --version printed %q", out)
	}
}
