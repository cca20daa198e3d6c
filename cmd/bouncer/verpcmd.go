package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/bouncer/bouncer/verp"
)

const verpUsage = `Usage: bouncer verp COMMAND [flags]

Commands:
  keygen   print a new signing key as a [verp] table for the config file
  sign     print a signed return-path address for a recipient
  verify   explain a return-path address; exit 0 only for a VERP address bouncer accepts

The format is described in verp/FORMAT.md.
`

func (a *app) verpCmd(_ context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, verpUsage)
		return &exitError{code: 2}
	}
	switch args[0] {
	case "keygen":
		return a.verpKeygen(args[1:])
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
	fs := newFlags("verp verify", "verp verify ADDR\n\nExits 0 if ADDR is a VERP address (plain or signed) that bouncer accepts at RCPT,\n"+
		"1 if bouncer refuses it or it is not VERP (the recipient would then come from the report).", a.stderr)
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
	if x.Err != nil || x.Result.Form == verp.FormNone {
		return &exitError{code: 1}
	}
	return nil
}

// keygenUsage describes verp keygen.
const keygenUsage = `verp keygen [--id ID]

Prints a new signing key: a [verp] table with keys = [{ id, secret }] (32
random bytes, base64url), ready to append to a config file that has no
[verp] table yet, or whose keys line to copy into the existing one:

    (umask 077; bouncer verp keygen > verp.toml)
    bouncer verp sign -config verp.toml --domain bounce.example.org --recipient user@example.com`

// verpKeygen prints a new key in the form verp.keys takes.
func (a *app) verpKeygen(args []string) error {
	fs := newFlags("verp keygen", keygenUsage, a.stderr)
	id := fs.String("id", "a", "key `id`: one letter or digit, carried in every token (use a new one to rotate)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError("verp keygen: unexpected argument %q", pos[0])
	}
	k, err := newVERPKey(*id)
	if err != nil {
		return usageError("verp keygen: %v", err)
	}
	fmt.Fprintf(a.stdout, "# bouncer verp keygen, %s. Keep this secret; keep an old key listed\n"+
		"# while mail signed with it can still bounce.\n[verp]\nkeys = [{ id = %q, secret = %q }]\n",
		time.Now().UTC().Format(time.DateOnly), k.ID, k.Secret)
	return nil
}

// newVERPKey returns a key with id and a secret of 32 random bytes in
// base64url (43 characters, nothing TOML must escape).
func newVERPKey(id string) (verp.Key, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return verp.Key{}, fmt.Errorf("reading random bytes: %w", err)
	}
	k := verp.Key{ID: id, Secret: base64.RawURLEncoding.EncodeToString(b)}
	return k, k.Validate()
}
