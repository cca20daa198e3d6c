package main

import (
	"context"
	"net"
	"syscall"
	"testing"
)

// TestListenSMTPNoKeepAlive: accepted SMTP connections have no TCP
// keep-alive (the server's deadlines bound a session).
func TestListenSMTPNoKeepAlive(t *testing.T) {
	ln, err := listenSMTP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw, err := s.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
	}); err != nil || serr != nil {
		t.Fatalf("getsockopt: %v %v", err, serr)
	}
	if on != 0 {
		t.Fatalf("SO_KEEPALIVE = %d on an accepted SMTP connection, want 0", on)
	}
}
