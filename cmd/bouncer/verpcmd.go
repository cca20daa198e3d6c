package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/bouncer/bouncer/verp"
)

const verpUsage = `Usage: bouncer verp COMMAND [flags]

Commands:
  sign     print a signed return-path address for a recipient
  verify   explain a return-path address and whether bouncer accepts it

The format is described in verp/FORMAT.md.
`

func (a *app) verpCmd(_ context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, verpUsage)
		return &exitError{code: 2}
	}
	switch args[0] {
	case "sign":
		return a.verpSign(args[1:])
	case "verify":
		return a.verpVerify(args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(a.stdout, verpUsage)
		return nil
	}
	fmt.Fprint(a.stderr, verpUsage)
	return usageError("verp: unknown command %q", args[0])
}

func (a *app) verpSign(args []string) error {
	fs := newFlags("verp sign", "verp sign --recipient ADDR [--campaign ID] [--list ID] [--domain D] [--prefix P]", a.stderr)
	cfgPath := commonFlags(fs)
	rcpt := fs.String("recipient", "", "the `address` the mail is sent to")
	campaign := fs.String("campaign", "", "campaign `id` (letters, digits, _ and -)")
	list := fs.String("list", "", "list `id` (letters, digits, _ and -)")
	domain := fs.String("domain", "", "bounce `domain` (default: the first of smtp.domains)")
	prefix := fs.String("prefix", "", "local-part `prefix` (default: verp.prefix, else \"bounces\")")
	compact := fs.Bool("compact", false, "always use the compact form (a hash of the address)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *rcpt == "" {
		return usageError("verp sign: want --recipient ADDR and no other arguments")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if len(cfg.VERP.Keys) == 0 {
		return fmt.Errorf("verp sign: no keys configured (verp.keys)")
	}
	key := cfg.VERP.Keys[0]
	for _, k := range cfg.VERP.Keys {
		if cfg.VERP.SignKey != "" && strings.EqualFold(k.ID, cfg.VERP.SignKey) {
			key = k
		}
	}
	if *domain == "" {
		if len(cfg.SMTP.Domains) == 0 {
			return usageError("verp sign: no --domain and smtp.domains is empty")
		}
		*domain = cfg.SMTP.Domains[0]
	}
	if *prefix == "" {
		*prefix = cfg.VERP.Prefix
	}
	s, err := verp.NewSigner(verp.SignerOptions{
		Key:       verp.Key{ID: key.ID, Secret: key.Secret},
		Domain:    *domain,
		Prefix:    *prefix,
		Delimiter: cfg.VERP.Delimiter,
		Equals:    cfg.VERP.Equals,
		Compact:   *compact,
	})
	if err != nil {
		return fmt.Errorf("verp sign: %w", err)
	}
	addr, err := s.Sign(*rcpt, *campaign, *list, time.Now())
	if err != nil {
		return fmt.Errorf("verp sign: %w", err)
	}
	fmt.Fprintln(a.stdout, addr)
	return nil
}

func (a *app) verpVerify(args []string) error {
	fs := newFlags("verp verify", "verp verify ADDR\n\nExits 0 if bouncer accepts ADDR at RCPT, 1 if it refuses it.", a.stderr)
	cfgPath := commonFlags(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("verp verify: want exactly one address")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	x := verp.NewDecoder(cfg.verpOptions()).Explain(pos[0])
	fmt.Fprint(a.stdout, x.String())
	if !strings.HasSuffix(x.String(), "\n") {
		fmt.Fprintln(a.stdout)
	}
	if x.Err != nil {
		return &exitError{code: 1}
	}
	return nil
}
