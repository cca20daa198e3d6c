package main

import (
	"fmt"
	"testing"

	"github.com/bouncer/bouncer/store/storetest"
)

// TestStormCounted: serve counts each storm the guard starts in
// bouncer_storms_started_total (and logs it), once per storm.
func TestStormCounted(t *testing.T) {
	ts := newTestServer(t, "[storm]\nthreshold = 2\n")
	if n := scrape(t, ts.httpAddr, "bouncer_storms_started_total", nil); n != 0 {
		t.Fatalf("storms before any bounce: %v", n)
	}
	for i := range 5 {
		msg := storetest.DSN(fmt.Sprintf("u%d@isp.example", i), "5.4.3", fmt.Sprintf("Mon, 2 Feb 2026 00:00:%02d +0000", i))
		tcheck(t, deliver(t, ts.smtpAddr, fmt.Sprintf("bounces+u%d=isp.example@localhost", i), []byte(msg)), "delivering")
	}
	if n := scrape(t, ts.httpAddr, "bouncer_storms_started_total", nil); n != 1 {
		t.Fatalf("bouncer_storms_started_total = %v after one storm, want 1", n)
	}
}
