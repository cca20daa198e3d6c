package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serveLog runs serve with cfg until it listens, stops it and returns
// what it logged.
func serveLog(t *testing.T, cfg string) string {
	t.Helper()
	var log syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	a := &app{stdout: &log, stderr: &log, onReady: func(net.Addr, net.Addr) { close(ready) }}
	done := make(chan error, 1)
	go func() { done <- a.run(ctx, []string{"serve", "-config", cfg}) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve stopped before listening: %v\n%s", err, log.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not listen within 30s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	return log.String()
}

// TestServeLogsAbsoluteDBPath: a relative store.path is taken from the
// config file's folder, and the start line gives the absolute path.
func TestServeLogsAbsoluteDBPath(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"\"\n[store]\npath = \"rel.db\"\n")
	log := serveLog(t, cfg)
	want := "db=" + filepath.Join(dir, "rel.db")
	if !filepath.IsAbs(dir) || !strings.Contains(log, `msg="bouncer listening"`) || !strings.Contains(log+" ", want+" ") && !strings.Contains(log, want+"\n") {
		t.Errorf("start line does not say %s:\n%s", want, log)
	}
}
