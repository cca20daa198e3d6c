package postgres

import (
	"context"
	"sync"
	"testing"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c storetest.Config) store.Store {
		return mustOpen(t, Options{Now: c.Now, Rules: c.Rules})
	})
}

func TestOnStormOnceAcrossHosts(t *testing.T) {
	// Two hosts on one database: the storm both count starts once, and
	// only the host whose delivery started it is told.
	url := cluster.Database(t)
	var mu sync.Mutex
	var started []store.Storm
	on := func(st store.Storm) { mu.Lock(); started = append(started, st); mu.Unlock() }
	rules := store.Rules{Storm: store.StormOptions{Threshold: 3}}
	a := mustOpen(t, Options{URL: url, Rules: rules, OnStorm: on})
	b := mustOpen(t, Options{URL: url, Rules: rules, OnStorm: on})
	for i, db := range []*DB{a, b, a, b, a, b} {
		d := storetest.Delivery(t, storetest.DSN(string(rune('a'+i))+"@isp.example", "5.4.3", "Mon, 2 Feb 2026 00:00:0"+string(rune('0'+i))+" +0000"))
		if _, err := db.Save(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(started) != 1 || started[0].Domain != "isp.example" {
		t.Fatalf("storms told %+v, want one of isp.example", started)
	}
	holds, err := a.Holds("isp.example")
	tcheck(t, err, "holds")
	if len(holds) != 3 {
		t.Fatalf("%d holds, want 3 (the two hosts' counts add up)", len(holds))
	}
}
