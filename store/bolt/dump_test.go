package bolt

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/storetest"

	bbolt "go.etcd.io/bbolt"
)

// TestExportCoversEveryBucket uses every feature that writes a bucket
// (storm guard, soft counts, outbox, MX checks, retention mark) and
// checks that each bucket of the file is exported, or is an index that
// Import rebuilds, so a bucket added later cannot be left out of bouncer
// copy silently.
func TestExportCoversEveryBucket(t *testing.T) {
	clock := newClock()
	decide := func(r *store.Record) store.Decision {
		if r.Status == "4.2.2" {
			return store.Decision{Action: store.ActionCount, Threshold: 3, Window: time.Hour}
		}
		return store.Decision{Action: store.ActionSuppress}
	}
	db, _ := mustOpen(t, Options{Now: clock.Now, Decide: decide, Storm: store.StormOptions{Threshold: 2, Window: time.Hour}})
	tcheck(t, db.SetOutboxTargets([]store.OutboxTarget{{Name: "l", Events: store.EventTypes}}), "targets")
	for i, a := range []string{"a@isp.example", "b@isp.example", "c@isp.example", "d@soft.example"} {
		status := "5.1.1"
		if i == 3 {
			status = "4.2.2"
		}
		storetest.Save(t, db, storetest.DSN(a, status, fmt.Sprint("Mon, 2 Mar 2026 10:00:0", i, " +0000")))
	}
	due, err := db.OutboxDue(clock.Now(), 1, 10, nil)
	tcheck(t, err, "due")
	_, err = db.OutboxUpdate([]store.OutboxResult{{Seq: due[0].Seq, Err: fmt.Errorf("no"), Dead: true}})
	tcheck(t, err, "dead")
	_, _, err = db.SetMXCheck("isp.example", store.MXCheck{Verdict: "ok", Routed: true, Checked: clock.Now()}, false)
	tcheck(t, err, "mx")
	_, err = db.PruneRaw(context.Background(), clock.Now().Add(-time.Hour))
	tcheck(t, err, "prune mark")

	kinds := map[string]int{}
	tcheck(t, db.Export(context.Background(), func(it *store.Item) error { kinds[it.Kind()]++; return nil }), "export")
	for _, k := range store.DumpKinds {
		if kinds[k] == 0 {
			t.Errorf("nothing exported of %s", k)
		}
	}
	covered := map[string]bool{}
	for _, b := range [][]byte{bucketMeta, bucketRaw, bucketRecords, bucketSeen, bucketSuppress, bucketSoft,
		bucketStormCount, bucketStormFlag, bucketHeld, bucketDomains, bucketMXHealth, bucketDaily,
		bucketOutboxTargets, bucketOutbox, bucketOutboxDead,
		// Rebuilt by Import from the items above.
		bucketIdxRcpt, bucketIdxDomain, bucketIdxStatus, bucketIdxDStatus, bucketSupDomain, bucketDomStatus, bucketDomTime} {
		covered[string(b)] = true
	}
	tcheck(t, db.view(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			if !covered[string(name)] {
				t.Errorf("bucket %s is not copied by Export/Import", name)
			}
			return nil
		})
	}), "listing buckets")
}
