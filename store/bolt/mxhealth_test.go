package bolt_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
)

func TestMXRecovery(t *testing.T) {
	db, c := openPolicyStore(t, 0)
	save543(t, db, c, "a@route.example")
	save543(t, db, c, "b@route.example")
	tcheck(t, db.AddSuppression(store.Suppression{Address: "manual@route.example", Reason: "asked", Status: "5.4.3"}), "manual suppression")
	check := func(routed, lift bool) (bool, int) {
		t.Helper()
		c.Add(time.Hour)
		v := "unreachable"
		if routed {
			v = "valid"
		}
		rec, n, err := db.SetMXCheck("Route.Example", store.MXCheck{Verdict: v, Routed: routed, Checked: c.Now(), Result: json.RawMessage(`{"verdict":"` + v + `"}`)}, lift)
		tcheck(t, err, "storing check")
		return rec, n
	}

	if rec, _ := check(false, true); rec {
		t.Fatal("a failed check marked the domain recovered")
	}
	d := domainStat(t, db, "route.example")
	if d.LastMX == nil || d.LastMX.Verdict != "unreachable" || d.Recovered != nil {
		t.Fatalf("after failed check: last %+v recovered %v", d.LastMX, d.Recovered)
	}
	if rec, n := check(true, false); !rec || n != 0 {
		t.Fatalf("routed check after failure: recovered %v lifted %d", rec, n)
	}
	d = domainStat(t, db, "route.example")
	if d.Recovered == nil || !d.Recovered.Equal(c.Now()) || !d.LastMX.Routed {
		t.Fatalf("after recovery: last %+v recovered %v", d.LastMX, d.Recovered)
	}
	if suppressed(t, db, "a@route.example") == nil {
		t.Fatal("suppression lifted without lift")
	}
	if rec, _ := check(true, true); rec {
		t.Fatal("a second routed check is not a new recovery")
	}

	// A new 5.4.3 bounce: the recovery no longer shows, and the next
	// routed check is a new one; with lift it takes the policy
	// suppressions of 5.4.x off the list, not the manual one.
	c.Add(time.Hour)
	save543(t, db, c, "c@route.example")
	if d := domainStat(t, db, "route.example"); d.Recovered != nil {
		t.Fatalf("recovery still shown after a new 5.4.3: %v", d.Recovered)
	}
	if rec, n := check(true, true); !rec || n != 3 {
		t.Fatalf("routed check after new bounce: recovered %v lifted %d, want true 3", rec, n)
	}
	for addr, want := range map[string]bool{"a@route.example": false, "c@route.example": false, "manual@route.example": true} {
		if got := suppressed(t, db, addr) != nil; got != want {
			t.Errorf("%s suppressed %v, want %v", addr, got, want)
		}
	}
	if _, _, err := db.SetMXCheck("bad domain@x", store.MXCheck{}, false); err == nil {
		t.Error("invalid domain accepted")
	}
	tcheck(t, db.Check(), "check")
}
