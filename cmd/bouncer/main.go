// Command bouncer receives bounces (RFC 3464 delivery status notifications)
// over SMTP, decodes and stores them, and answers questions about them.
//
// Usage:
//
//	bouncer serve [-config FILE]
//	bouncer parse [--json] FILE...
//	bouncer query [--status CODE] [--domain D] [--recipient ADDR] [--since DURATION|TIME] [--limit N] [--before ID] [--json]
//	bouncer suppressed ADDR
//	bouncer domains [--status CODE] [--limit N] [--check] [--json]
//	bouncer suppress add ADDR [--reason TEXT] | remove ADDR | list [--domain D] [--json]
//	bouncer storm list | holds [DOMAIN] | release DOMAIN | drop DOMAIN
//	bouncer check
//	bouncer salvage --to NEW.db
//	bouncer backup NEW.db
//	bouncer mx DOMAIN
//	bouncer verp keygen [--id ID]
//	bouncer verp sign --recipient ADDR [--domain D] [--campaign ID] [--list ID]
//	bouncer verp verify ADDR
//	bouncer export suppressions|bounces [--format csv|json|postfix] [filters]
//	bouncer outbox [list [--dead]] | retry [--all|SEQ...] | drop [--all|SEQ...]
//	bouncer mailbox test NAME
//	bouncer version (or --version)
//
// Every command takes -config FILE and --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	err := a.run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// app carries what a command writes to and, for tests, a hook that is told
// the bound addresses once serve listens.
type app struct {
	stdout, stderr io.Writer
	onReady        func(smtpAddr, httpAddr net.Addr)
}

// exitError carries an exit code. A nil err inside means: exit with code
// and print nothing more.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError marks a mistake in the command line (exit 2).
func usageError(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && !errors.Is(ee.err, errHelp) {
			fmt.Fprintf(stderr, "bouncer: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "bouncer: %v\n", err)
	return 1
}

const topUsage = `bouncer receives bounces over SMTP, decodes and stores them.

Usage: bouncer COMMAND [flags]

Commands:
  serve        run the SMTP receiver and the admin HTTP API
  parse        decode bounce files and print the records (no server, no database)
  query        list stored bounce records, newest first
  suppressed   exit 0 and say why if an address is suppressed, exit 1 if not
  domains      recipient domains with bounces, per status, with the MTAs seen,
               storm flags and the last MX check (--check: check 5.4.x domains now)
  suppress     add, remove or list suppressed addresses (suppress add|remove|list)
  storm        domains whose suppressions the storm guard holds (list, holds, release, drop)
  reclassify   decode the stored messages again with this decoder; print (--apply: make) the changes
  check        verify the database file (with the server stopped)
  salvage      copy what a damaged database still holds into a new file
  backup       write a consistent copy of the database, also while serve runs
  copy         copy a whole store between bbolt and PostgreSQL, and compare the counts
  mx           check a domain's MX records and whether each MX answers
  verp         make a signing key, sign a return path, or explain one (verp keygen, sign, verify)
  export       stream the suppression list (csv, json, Postfix map) or bounces (csv, json)
  outbox       push events waiting or dead (list, retry, drop)
  mailbox      log in to a [[mailbox]] and say how many messages wait (mailbox test NAME)
  version      print the version and the revision the binary was built from

Run "bouncer COMMAND --help" for a command's flags.
`

var errHelp = errors.New("help requested")

func (a *app) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(a.stderr, topUsage)
		return &exitError{code: 2}
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = a.serve(ctx, rest)
	case "parse":
		err = a.parseCmd(rest)
	case "query":
		err = a.queryCmd(ctx, rest)
	case "suppressed":
		err = a.suppressedCmd(ctx, rest)
	case "domains":
		err = a.domainsCmd(ctx, rest)
	case "check":
		err = a.checkCmd(ctx, rest)
	case "salvage":
		err = a.salvageCmd(rest)
	case "backup":
		err = a.backupCmd(ctx, rest)
	case "copy":
		err = a.copyCmd(ctx, rest)
	case "verp":
		err = a.verpCmd(ctx, rest)
	case "mx":
		err = a.mxCmd(ctx, rest)
	case "export":
		err = a.exportCmd(ctx, rest)
	case "outbox":
		err = a.outboxCmd(ctx, rest)
	case "reclassify":
		err = a.reclassifyCmd(ctx, rest)
	case "suppress":
		err = a.suppressCmd(ctx, rest)
	case "storm":
		err = a.stormCmd(ctx, rest)
	case "mailbox":
		err = a.mailboxCmd(ctx, rest)
	case "version", "-version", "--version":
		err = a.versionCmd(rest)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(a.stdout, topUsage)
		return nil
	default:
		fmt.Fprint(a.stderr, topUsage)
		return usageError("unknown command %q", cmd)
	}
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}
