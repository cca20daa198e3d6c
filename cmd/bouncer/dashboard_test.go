package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
)

// chromiumPath finds Debian's chromium (.ci/run installs it). Without it
// the browser test skips, or fails under CI=true.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed, and CI must run the dashboard's browser test (.ci/run installs it)")
	}
	t.Skip("chromium not installed: the dashboard's browser test is skipped")
	return ""
}

// chromium runs headless Chromium on url with args (--dump-dom,
// --screenshot=...) and returns its standard output.
func chromium(t *testing.T, bin, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(append(base, args...), url)...)
	cmd.Dir = t.TempDir()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// screenshotDir is where the screenshots go: $BOUNCER_SCREENSHOTS (CI
// keeps them as artefacts) or a temporary folder.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("BOUNCER_SCREENSHOTS"); d != "" {
		tcheck(t, os.MkdirAll(d, 0o755), "screenshot folder")
		return d
	}
	return t.TempDir()
}

// TestDashboardInBrowser starts serve on loopback, delivers real samples
// over SMTP, and loads the overview and a domain page in headless
// Chromium: the chart in the DOM the browser built must show the numbers
// the store holds.
func TestDashboardInBrowser(t *testing.T) {
	bin := chromiumPath(t)
	ts := newTestServer(t, "")
	samples, err := filepath.Glob("../../parse/testdata/golden/*.eml")
	tcheck(t, err, "glob")
	for _, name := range []string{"postfix-543.eml", "exim-500.eml", "lhost-postfix-03.eml"} {
		samples = append(samples, filepath.Join("testdata", name))
	}
	for _, f := range samples {
		raw, err := os.ReadFile(f)
		tcheck(t, err, "reading sample")
		tcheck(t, deliver(t, ts.smtpAddr, "bounces@bounce.example.org", raw), "delivering "+f)
	}

	// What the store holds, through the API: the classes of today's
	// counted records, and the domain of the 5.4.3 sample.
	resp, err := http.Get("http://" + ts.httpAddr + "/v1/bounces?limit=1000")
	tcheck(t, err, "listing bounces")
	var list struct{ Records []store.Record }
	tcheck(t, json.NewDecoder(resp.Body).Decode(&list), "decoding bounces")
	resp.Body.Close()
	want := map[string]int{}
	domain, domainN := "", 0
	for _, r := range list.Records {
		if !r.Duplicate && r.Mismatch == "" {
			want[store.DayClass(&r)]++
		}
		if r.Status == "5.4.3" && r.Domain != "" && domain == "" {
			domain = r.Domain
		}
	}
	for _, r := range list.Records {
		if r.Domain == domain && r.Status == "5.4.3" && !r.Duplicate && r.Mismatch == "" {
			domainN++
		}
	}
	if want[store.DayHard] == 0 || domain == "" {
		t.Fatalf("the samples gave no hard bounce or no 5.4.3 domain: %v", want)
	}
	today := store.DayOf(time.Now())
	shots := screenshotDir(t)

	base := "http://" + ts.httpAddr
	dom := chromium(t, bin, base+"/", "--dump-dom")
	group := regexp.MustCompile(`(?s)<g class="day" data-day="` + today + `" data-total="(\d+)">(.*?)</g>`).FindStringSubmatch(dom)
	if group == nil {
		t.Fatalf("no bar for %s in the overview as Chromium built it:\n%s", today, dom)
	}
	total := 0
	for _, k := range []string{store.DayHard, store.DaySoft, store.DayComplaint, store.DayAutoReply} {
		total += want[k]
		if want[k] == 0 {
			continue
		}
		seg := fmt.Sprintf(`data-key="%s" data-n="%d"`, k, want[k])
		if !strings.Contains(group[2], seg) {
			t.Errorf("today's bar lacks %s: %s", seg, group[2])
		}
	}
	if group[1] != fmt.Sprint(total) {
		t.Errorf("today's bar total %s, want %d", group[1], total)
	}
	if !strings.Contains(dom, `<td data-key="hard">`+fmt.Sprint(want[store.DayHard])+`</td>`) {
		t.Errorf("the table lacks today's %d hard bounces", want[store.DayHard])
	}
	chromium(t, bin, base+"/ui/", "--screenshot="+filepath.Join(shots, "overview.png"), "--window-size=1280,1800", "--hide-scrollbars")
	chromium(t, bin, base+"/ui/", "--screenshot="+filepath.Join(shots, "overview-phone.png"), "--window-size=390,2400", "--hide-scrollbars")

	page := base + "/ui/domain?name=" + domain
	dom = chromium(t, bin, page, "--dump-dom")
	if seg := fmt.Sprintf(`data-key="5.4.3" data-n="%d"`, domainN); !strings.Contains(dom, seg) {
		t.Errorf("the domain page of %s lacks %s:\n%s", domain, seg, dom)
	}
	chromium(t, bin, page, "--screenshot="+filepath.Join(shots, "domain.png"), "--window-size=1280,1400", "--hide-scrollbars")
	for _, n := range []string{"overview.png", "overview-phone.png", "domain.png"} {
		fi, err := os.Stat(filepath.Join(shots, n))
		if err != nil || fi.Size() < 1000 {
			t.Errorf("screenshot %s: %v", n, err)
		}
	}
	t.Logf("screenshots in %s", shots)
}
