package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/bouncer/bouncer/mx"
	"github.com/bouncer/bouncer/store"
)

// routeCheck is the outcome of checking one domain's route.
type routeCheck struct {
	Domain    string     `json:"domain"`
	Verdict   mx.Verdict `json:"verdict"`
	Recovered bool       `json:"recovered"`
	Lifted    int        `json:"lifted"`
	Err       string     `json:"error,omitempty"`
}

// hasRouteFailure reports whether d has 5.4.x bounces (RFC 3463: routing
// failures), whose route is worth watching.
func hasRouteFailure(d store.DomainStat) bool {
	for s, n := range d.Counts {
		if n > 0 && store.RouteStatus(s) {
			return true
		}
	}
	return false
}

// checkRoutes runs an MX check for every domain with 5.4.x bounces for
// which due is true (all if due is nil), at most cfg.MX.RecheckConcurrency
// at once, and stores each result. Reserved names (mx.Reserved: .test,
// example.com, ...) are never checked: they have no public route, and a
// query would only leak them. A check that could not be made (the
// resolver failed) is reported, not stored, so it does not clear a
// recovery.
func checkRoutes(ctx context.Context, rs routeStore, cfg Config, due func(store.DomainStat) bool) ([]routeCheck, error) {
	ds, err := rs.Domains(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("listing domains: %w", err)
	}
	var todo []string
	for _, d := range ds {
		if hasRouteFailure(d) && !mx.Reserved(d.Domain) && (due == nil || due(d)) {
			todo = append(todo, d.Domain)
		}
	}
	out := make([]routeCheck, len(todo))
	sem := make(chan struct{}, max(cfg.MX.RecheckConcurrency, 1))
	var wg sync.WaitGroup
	n := 0
loop:
	for i, dom := range todo {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		n = i + 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = checkRoute(ctx, rs, cfg, dom)
		}()
	}
	wg.Wait()
	return out[:n], ctx.Err()
}

// checkRoute checks and stores one domain.
func checkRoute(ctx context.Context, rs routeStore, cfg Config, domain string) routeCheck {
	rc := routeCheck{Domain: domain}
	res, err := mx.Check(ctx, domain, cfg.mxOptions())
	rc.Verdict = res.Verdict
	if err != nil {
		rc.Err = err.Error()
		return rc
	}
	raw, err := json.Marshal(res)
	if err != nil {
		rc.Err = err.Error()
		return rc
	}
	c := store.MXCheck{Verdict: string(res.Verdict), Routed: res.Verdict.Routed(), Checked: res.Checked, Result: raw}
	rc.Recovered, rc.Lifted, err = rs.SetMXCheck(ctx, domain, c, cfg.MX.LiftOnRecovery)
	if err != nil {
		rc.Err = fmt.Sprintf("storing result: %v", err)
	}
	return rc
}

// maxRecheckTick is the longest sleep of the re-check loop: a domain
// whose check is due (or that has never been checked) waits at most this.
const maxRecheckTick = 10 * time.Minute

// recheckOn says whether serve re-checks routes in the background, and
// why: mx.recheck "on" or "off", or with "auto" only when SMTP listens
// off loopback, so that a default run on loopback sends nothing off the
// machine.
func recheckOn(cfg Config) (bool, string) {
	switch {
	case cfg.MX.RecheckInterval <= 0:
		return false, "mx.recheck_interval is 0s"
	case cfg.MX.Recheck == "on":
		return true, "mx.recheck is on"
	case cfg.MX.Recheck == "off":
		return false, "mx.recheck is off"
	case isLoopback(cfg.SMTP.Listen):
		return false, `smtp.listen is a loopback address; set mx.recheck = "on" to check anyway`
	}
	return true, "smtp.listen is not a loopback address"
}

// startRecheck starts the goroutine that re-checks, every
// mx.recheck_interval, the routes of domains with 5.4.x bounces, if
// recheckOn says so. It wakes every min(interval, 10m) (the first time
// that long after start) and checks the domains whose last check is at
// least an interval old (or that have none), so a restart does not delay
// checks. The returned function stops it and waits for it.
func (a *app) startRecheck(ctx context.Context, db store.Store, cfg Config, logger *slog.Logger) func() {
	interval := time.Duration(cfg.MX.RecheckInterval)
	on, why := recheckOn(cfg)
	if !on {
		logger.Info("route re-check off", "why", why)
		return func() {}
	}
	tick := min(interval, maxRecheckTick)
	logger.Info("route re-check on", "why", why, "interval", interval.String(), "first", time.Now().Add(tick).Format(time.RFC3339))
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now := time.Now()
			due := func(d store.DomainStat) bool {
				return d.LastMX == nil || now.Sub(d.LastMX.Checked) >= interval
			}
			res, err := checkRoutes(ctx, dbAdmin{db}, cfg, due)
			if err != nil && ctx.Err() == nil {
				logger.Warn("route re-check failed", "err", err)
			}
			for _, rc := range res {
				switch {
				case rc.Err != "":
					logger.Warn("route check failed", "domain", rc.Domain, "err", rc.Err)
				case rc.Recovered:
					logger.Info("domain route recovered", "domain", rc.Domain, "verdict", rc.Verdict, "lifted", rc.Lifted)
				default:
					logger.Debug("route checked", "domain", rc.Domain, "verdict", rc.Verdict)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// domainsCheck is "bouncer domains --check": it checks every domain with
// 5.4.x bounces now, stores the results and prints them.
func (a *app) domainsCheck(ctx context.Context, cfg Config, asJSON bool) error {
	adm, err := connectAdmin(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer adm.Close()
	res, err := checkRoutes(ctx, adm, cfg, nil)
	if werr := writeRouteChecks(a.stdout, res, asJSON); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	for _, rc := range res {
		if rc.Err != "" {
			return &exitError{code: 1, err: fmt.Errorf("domains --check: %s: %s", rc.Domain, rc.Err)}
		}
	}
	return nil
}

func writeRouteChecks(w io.Writer, res []routeCheck, asJSON bool) error {
	const empty = "no domain with 5.4.x bounces to check (reserved names such as .test and example.com are never checked)"
	return writeList(w, res, asJSON, "DOMAIN\tVERDICT\tRECOVERED\tLIFTED\tERROR", empty, func(rc routeCheck) string {
		return fmt.Sprintf("%s\t%s\t%v\t%d\t%s", rc.Domain, dash(string(rc.Verdict)), rc.Recovered, rc.Lifted, dash(rc.Err))
	})
}

// healthColumns renders a domain's storm flag and last MX check for the
// domains table. The storm column is short ("5.4.3 held 21"); "bouncer
// storm list" has the time, the count and the key.
func healthColumns(d store.DomainStat) (storm, route string) {
	storm, route = "-", "-"
	if s := d.Storm; s != nil {
		storm = fmt.Sprintf("%s held %d", s.Status, s.Held)
	}
	if m := d.LastMX; m != nil {
		parts := []string{m.Verdict, showTime(m.Checked)}
		if d.Recovered != nil {
			parts = append(parts, "recovered "+showTime(*d.Recovered))
		}
		route = strings.Join(parts, " ")
	}
	return storm, route
}
