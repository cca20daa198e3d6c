package bolt_test

import (
	"path/filepath"
	"testing"

	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
	"github.com/bouncer/bouncer/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, c storetest.Config) store.Store {
		db, err := bolt.Open(filepath.Join(t.TempDir(), "bouncer.db"), bolt.Options{
			Now: c.Now, Decide: c.Rules.Decide, Storm: c.Rules.Storm, DedupeWindow: c.Rules.DedupeWindow,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}
