// Command smtpbench measures SMTP intake: Postfix's smtp-sink (the protocol
// ceiling), a go-smtp server that discards every message (go-smtp's own
// ceiling) and bouncer (which stores every message durably before 250),
// each driven with the same load and the same real DSN. See BENCHMARKS.md
// at the repository root and bench/run.sh.
//
// Subcommands:
//
//	smtpbench run [flags]      the whole benchmark; prints the table
//	smtpbench discard [flags]  the go-smtp discard server alone
//	smtpbench load [flags]     the Go load generator alone (latency per message)
//	smtpbench inproc [flags]   bouncer's server and store in process, with pprof profiles
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "smtpbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: smtpbench run|discard|load|inproc [flags]")
	}
	switch args[0] {
	case "run":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "discard":
		return discardCmd(ctx, args[1:], stdout, stderr)
	case "load":
		return loadCmd(ctx, args[1:], stdout, stderr)
	case "inproc":
		return inprocCmd(ctx, args[1:], stdout, stderr)
	default:
		return fmt.Errorf("unknown subcommand %q (want run, discard, load or inproc)", args[0])
	}
}
