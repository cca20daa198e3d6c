package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/bouncer/bouncer/mx"
)

// mxOptions turns the config into the checker's options.
func (c *Config) mxOptions() mx.Options {
	return mx.Options{
		Resolver:        c.MX.Resolver,
		Port:            c.MX.Port,
		ConnectTimeout:  time.Duration(c.MX.Timeout),
		GreetingTimeout: time.Duration(c.MX.Timeout),
		MaxMX:           c.MX.MaxMX,
		MaxAddrs:        c.MX.MaxAddrs,
		NoIPv6:          !c.MX.IPv6,
	}
}

// mxCmd checks a domain's mail route: exit 0 when mail can reach it, 1
// when it cannot, and an error (exit 1 with a message) when the lookup
// itself failed.
func (a *app) mxCmd(ctx context.Context, args []string) error {
	fs := newFlags("mx", "mx [--json] DOMAIN\n\nLooks up DOMAIN's MX records (or its implicit MX), connects to port 25 of each\naddress and reads the greeting. Exits 0 when the route works, 1 when it does not.", a.stderr)
	cfgPath := commonFlags(fs)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("mx: want exactly one domain")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	res, err := mx.Check(ctx, pos[0], cfg.mxOptions())
	if *asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetEscapeHTML(false)
		if jerr := enc.Encode(res); jerr != nil {
			return jerr
		}
	} else if err == nil {
		if ferr := mx.Format(a.stdout, res); ferr != nil {
			return ferr
		}
	}
	if err != nil {
		return fmt.Errorf("mx %s: %w", pos[0], err)
	}
	if !res.Verdict.Routed() {
		return &exitError{code: 1}
	}
	return nil
}
