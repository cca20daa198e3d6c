// Command storefill measures the store at scale (issue 8): it fills a new
// database with records over many domains through store.Save from many
// goroutines (the group-committing writer bouncer serve uses), then reports
// the fill rate, the file size per record and the time to open the file,
// and times the query commands of the bouncer binary against it.
//
//	go run ./bench/storefill -bouncer bin/bouncer -n 1000000 -domains 50000
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bouncer/bouncer/parse"
	"github.com/bouncer/bouncer/store"
	"github.com/bouncer/bouncer/store/bolt"
	bbolt "go.etcd.io/bbolt"
)

// Goals of issue 8, reported as met or not.
const (
	goalCommand   = 50 * time.Millisecond
	goalPerRecord = 1536.0
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "storefill:", err)
		os.Exit(1)
	}
}

type options struct {
	bouncer, msgFile, dir string
	config                string
	cpuProfile            string
	n, domains, workers   int
	keep                  bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flag.NewFlagSet("storefill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.bouncer, "bouncer", "", "bouncer `binary` whose query commands are timed (none: skip)")
	fs.StringVar(&o.msgFile, "msg", "cmd/bouncer/testdata/postfix-543.eml", "the DSN `file` every record is made from")
	fs.StringVar(&o.dir, "dir", "", "`folder` for the database (default: a new temporary folder, removed afterwards)")
	fs.IntVar(&o.n, "n", 1_000_000, "records")
	fs.IntVar(&o.domains, "domains", 50_000, "recipient domains")
	fs.IntVar(&o.workers, "workers", 1024, "goroutines calling Save")
	fs.BoolVar(&o.keep, "keep", false, "keep the database")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the in-process store calls to `file`")
	fs.StringVar(&o.config, "config", "", "no fill: time the query commands of -bouncer against the store of this config `file`\n"+
		"(e.g. PostgreSQL after bouncer copy of a filled file; -n and -domains must be the fill's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.config != "" {
		if o.bouncer == "" {
			return errors.New("-config needs -bouncer")
		}
		fmt.Fprintf(stdout, "query commands against the store of %s (%d records over %d domains)\n", o.config, o.n, o.domains)
		return timeCommands(o, o.config, stdout)
	}
	if o.n < 1 || o.domains < 1 || o.workers < 1 {
		return errors.New("-n, -domains and -workers must be positive")
	}
	raw, err := os.ReadFile(o.msgFile)
	if err != nil {
		return err
	}
	rep, err := parse.Message(bytes.NewReader(raw), parse.DefaultLimits())
	if err != nil || len(rep.Recipients) == 0 {
		return fmt.Errorf("decoding %s: %v (recipients: %d)", o.msgFile, err, len(rep.Recipients))
	}
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "storefill-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(o.dir)
		}
	}
	path := filepath.Join(o.dir, "bouncer.db")
	fmt.Fprintf(stdout, "store at scale: %d records over %d domains from %s, %d goroutines calling store.Save (default options), %s\n",
		o.n, o.domains, o.msgFile, o.workers, path)
	fill, err := fillDB(ctx, path, o, raw, rep, stdout)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	start := time.Now()
	db, err := bolt.Open(path, bolt.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	open := time.Since(start)
	db.Close()
	perRecord := float64(fi.Size()) / float64(o.n)
	fmt.Fprintf(stdout, "fill %v (%.0f records/s), file %.1f MiB = %.0f bytes/record, bolt.Open (read-only) %v\n",
		fill.Round(time.Millisecond), float64(o.n)/fill.Seconds(), float64(fi.Size())/(1<<20), perRecord, open.Round(time.Microsecond))
	goal(stdout, fmt.Sprintf("file size ≤ 1.5 KB per record: %.0f bytes", perRecord), perRecord <= goalPerRecord)
	if err := bucketStats(path, o.n, stdout); err != nil {
		return err
	}
	if err := timeInProcess(path, o, stdout); err != nil {
		return err
	}
	if o.bouncer == "" {
		return nil
	}
	return timeCommands(o, path, stdout)
}

// bucketStats prints where the file's bytes go, per top-level bucket, read
// with bbolt directly (read-only): pages allocated and bytes in use, per
// record, and the free pages.
func bucketStats(path string, n int, stdout io.Writer) error {
	bdb, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer bdb.Close()
	return bdb.View(func(tx *bbolt.Tx) error {
		fmt.Fprintf(stdout, "  page size %d, free pages %d (%.1f MiB)\n", tx.DB().Info().PageSize,
			tx.DB().Stats().FreePageN, float64(tx.DB().Stats().FreePageN*tx.DB().Info().PageSize)/(1<<20))
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			st := b.Stats()
			fmt.Fprintf(stdout, "  bucket %-12s %8d keys  allocated %6.0f B/record  in use %6.0f B/record\n", name, st.KeyN,
				float64(st.BranchAlloc+st.LeafAlloc)/float64(n), float64(st.BranchInuse+st.LeafInuse)/float64(n))
			return nil
		})
	})
}

// timeInProcess times the store calls behind the query commands, without
// process start, to tell store work from the command's own overhead.
func timeInProcess(path string, o options, stdout io.Writer) error {
	db, err := bolt.Open(path, bolt.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	dom := fmt.Sprintf("d%d.example", 10%o.domains)
	sup := fmt.Sprintf("user%d@d%d.example", (o.n-1)/10*10, (o.n-1)/10*10%o.domains)
	calls := []struct {
		name string
		f    func() (int, error)
	}{
		{"Query(status 5.4.3, domain, limit 100)", func() (int, error) {
			r, err := db.Query(store.Filter{Status: "5.4.3", Domain: dom, Limit: 100})
			return len(r), err
		}},
		{"Suppressed(addr)", func() (int, error) { _, err := db.Suppressed(sup); return 1, err }},
		{"Domains(\"\")", func() (int, error) { r, err := db.Domains(""); return len(r), err }},
		{"Domains(\"5.4.3\")", func() (int, error) { r, err := db.Domains("5.4.3"); return len(r), err }},
		{"RecentDomains(limit 100)", func() (int, error) {
			r, err := db.RecentDomains(store.DomainFilter{Limit: store.DefaultDomainLimit})
			return len(r), err
		}},
		{"RecentDomains(5.4.3, limit 100)", func() (int, error) {
			r, err := db.RecentDomains(store.DomainFilter{Status: "5.4.3", Limit: store.DefaultDomainLimit})
			return len(r), err
		}},
	}
	for _, c := range calls {
		var times []time.Duration
		got := 0
		for range 7 {
			start := time.Now()
			n, err := c.f()
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			times = append(times, time.Since(start))
			got = n
		}
		slices.Sort(times)
		fmt.Fprintf(stdout, "in process: store %-40s %6d results  median %7.1f ms\n", c.name, got, msf(times[len(times)/2]))
	}
	return nil
}

// delivery builds record i: recipient user<i>@d<i mod domains>.example, in
// the raw message and the report alike; every tenth one is a 5.4.3 (which
// the default policy suppresses), the others 5.1.1.
func delivery(i int, o options, raw []byte, rep *parse.Report) *store.Delivery {
	dom := fmt.Sprintf("d%d.example", i%o.domains)
	addr := fmt.Sprintf("user%d@%s", i, dom)
	local := fmt.Sprintf("user%d=%s", i, dom)
	r := *rep
	rc := r.Recipients[0]
	rc.FinalRecipient, rc.OriginalRecipient = addr, addr
	rc.Status = "5.1.1"
	if i%10 == 0 {
		rc.Status = "5.4.3"
	}
	rc.StatusLiteral = rc.Status
	r.Recipients = []parse.Recipient{rc}
	m := bytes.ReplaceAll(raw, []byte("user@dead.test"), []byte(addr))
	m = bytes.ReplaceAll(m, []byte("user=dead.test"), []byte(local))
	return &store.Delivery{
		Received: time.Now(),
		Envelope: store.Envelope{RcptTo: []string{"bounces+" + local + "@localhost"}, ClientIP: "127.0.0.1",
			Helo: "mx.example.net", VERP: addr},
		Raw:    m,
		Report: &r,
	}
}

func fillDB(ctx context.Context, path string, o options, raw []byte, rep *parse.Report, stdout io.Writer) (time.Duration, error) {
	db, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		return 0, err
	}
	var (
		next, done atomic.Int64
		wg         sync.WaitGroup
		errOnce    sync.Once
		firstErr   error
	)
	start := time.Now()
	stop := make(chan struct{})
	go func() { // progress
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				n := done.Load()
				fmt.Fprintf(stdout, "  %d records in %v (%.0f/s)\n", n, time.Since(start).Round(time.Second), float64(n)/time.Since(start).Seconds())
			}
		}
	}()
	for range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.n {
					return
				}
				if _, err := db.Save(ctx, delivery(i, o, raw, rep)); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	fill := time.Since(start)
	if err := db.Close(); err != nil && firstErr == nil {
		firstErr = err
	}
	return fill, firstErr
}

// timeCommands runs each query command of the bouncer binary a few times
// against the file (no server running, http.listen "") and prints the
// wall times, process start and open included.
// With -config, path is that config file.
func timeCommands(o options, path string, stdout io.Writer) error {
	cfg := o.config
	if cfg == "" {
		cfg = filepath.Join(o.dir, "bouncer.toml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[http]\nlisten = \"\"\n\n[store]\npath = %q\n", path)), 0o644); err != nil {
			return err
		}
	}
	// Domain 10 has 5.4.3 records when n > 10 (i ≡ 10 mod domains, i ≡ 0 mod 10).
	dom := fmt.Sprintf("d%d.example", 10%o.domains)
	sup := fmt.Sprintf("user%d@d%d.example", (o.n-1)/10*10, (o.n-1)/10*10%o.domains)
	cmds := []struct {
		args []string
		ok   func(out string) error
	}{
		{[]string{"query", "-status", "5.4.3", "-domain", dom, "-limit", "100", "-json"}, lines(1)},
		{[]string{"suppressed", sup}, func(string) error { return nil }},
		{[]string{"domains", "-json"}, lines(min(o.n, o.domains, store.DefaultDomainLimit))},
		{[]string{"domains", "-status", "5.4.3", "-json"}, lines(1)},
		{[]string{"domains", "-limit", "0", "-json"}, lines(min(o.n, o.domains))},
		{[]string{"domains", "-status", "5.4.3", "-limit", "0", "-json"}, lines(1)},
	}
	for _, c := range cmds {
		args := append(slices.Clone(c.args[:1]), append([]string{"-config", cfg}, c.args[1:]...)...)
		var times []time.Duration
		var out []byte
		for range 7 {
			start := time.Now()
			var err error
			out, err = exec.Command(o.bouncer, args...).Output()
			if err != nil {
				return fmt.Errorf("bouncer %s: %w", strings.Join(c.args, " "), err)
			}
			times = append(times, time.Since(start))
		}
		if err := c.ok(string(out)); err != nil {
			return fmt.Errorf("bouncer %s: %w", strings.Join(c.args, " "), err)
		}
		slices.Sort(times)
		med := times[len(times)/2]
		fmt.Fprintf(stdout, "bouncer %-48s %6d lines  min %7.1f ms  median %7.1f ms  max %7.1f ms\n",
			strings.Join(c.args, " "), strings.Count(string(out), "\n"),
			msf(times[0]), msf(med), msf(times[len(times)-1]))
		goal(stdout, fmt.Sprintf("bouncer %s ≤ 50 ms (median of 7): %.1f ms", c.args[0], msf(med)), med <= goalCommand)
	}
	return nil
}

// lines checks that a command printed at least n lines.
func lines(n int) func(string) error {
	return func(out string) error {
		if got := strings.Count(out, "\n"); got < n {
			return fmt.Errorf("printed %d lines, want at least %d", got, n)
		}
		return nil
	}
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func goal(out io.Writer, what string, met bool) {
	verdict := "NOT MET"
	if met {
		verdict = "met"
	}
	fmt.Fprintf(out, "goal: %s — %s\n", what, verdict)
}
