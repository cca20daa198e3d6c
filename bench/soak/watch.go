package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	benchproc "github.com/bouncer/bouncer/bench/proc"
)

// point is one sample of the server process and of the soak's counters.
type point struct {
	at              time.Duration // since the soak began
	rss, anon, file float64       // VmRSS, RssAnon, RssFile (bytes)
	fds, goroutines float64
	dbSize, walSize float64 // bytes
	records         float64 // records stored (the seed included)
	accepted        float64 // messages answered 250
	pushes          float64 // distinct events the webhook took
	queued          float64 // push events waiting in the outbox
	rawPruned       float64 // raw messages pruned so far
	errors          float64 // soak errors and bouncer's error lines so far
}

// metricsText fetches /metrics and sums each series over its labels.
func metricsText(hc *http.Client, base string) (map[string]float64, error) {
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading metrics: %s", resp.Status)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20))
}

// parseMetrics reads the Prometheus text format and sums the values of
// each metric name over its label sets.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				return nil, fmt.Errorf("reading metrics: bad line %q", line)
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("reading metrics: bad line %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("reading metrics: bad line %q", line)
		}
		out[name] += v
	}
	return out, sc.Err()
}

// logWatch reads bouncer's log as it grows: the raw messages pruned
// ("database pruned" raw=N) and the lines at level ERROR.
type logWatch struct {
	path    string
	off     int64
	partial []byte
	pruned  int
	prunes  int
	errors  []string
	nerr    int
	warns   int
}

var rawPrunedRE = regexp.MustCompile(`msg="database pruned" raw=(\d+)`)

func (lw *logWatch) read() error {
	f, err := os.Open(lw.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(lw.off, io.SeekStart); err != nil {
		return err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	lw.off += int64(len(b))
	b = append(lw.partial, b...)
	last := strings.LastIndexByte(string(b), '\n')
	lw.partial = append([]byte(nil), b[last+1:]...)
	for line := range strings.Lines(string(b[:last+1])) {
		switch {
		case strings.Contains(line, "level=ERROR"):
			lw.nerr++
			if len(lw.errors) < 10 {
				lw.errors = append(lw.errors, strings.TrimSpace(line))
			}
		case strings.Contains(line, "level=WARN"):
			lw.warns++
		}
		if m := rawPrunedRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			lw.pruned += n
			lw.prunes++
		}
	}
	return nil
}

// take samples the process and the counters.
func (s *soak) take() (point, error) {
	p := point{at: time.Since(s.start)}
	st, err := benchproc.Status(s.proc.Pid())
	if err != nil {
		return p, err
	}
	p.rss, p.anon, p.file = float64(st["VmRSS"]), float64(st["RssAnon"]), float64(st["RssFile"])
	fds, err := benchproc.OpenFiles(s.proc.Pid())
	if err != nil {
		return p, err
	}
	p.fds = float64(fds)
	m, err := metricsText(s.hc, s.api)
	if err != nil {
		return p, err
	}
	p.goroutines = m["go_goroutines"]
	p.records = m["bouncer_records_total"] + float64(s.seeded)
	p.queued = m["bouncer_outbox_queued"]
	for _, f := range []struct {
		path string
		v    *float64
	}{{s.dbPath, &p.dbSize}, {s.dbPath + "-wal", &p.walSize}} {
		fi, err := os.Stat(f.path)
		if errors.Is(err, fs.ErrNotExist) && f.v == &p.walSize {
			continue // no write-ahead log: this version writes none (the row checks it stays so)
		}
		if err != nil {
			return p, err
		}
		*f.v = float64(fi.Size())
	}
	if err := s.log.read(); err != nil {
		return p, err
	}
	p.rawPruned = float64(s.log.pruned)
	p.accepted = float64(s.in.accepted.Load())
	p.pushes = float64(s.rv.stats().unique)
	p.errors = float64(s.errorCount())
	return p, nil
}
