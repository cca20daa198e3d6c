package main

import (
	"bytes"
	"math/rand/v2"
)

// bigBounce returns the DSN msg grown to about size bytes the way a
// RET=FULL bounce is: its returned-headers part becomes a whole returned
// message (message/rfc822) whose body is text lines. The words are
// pseudo-random with a fixed seed, so every run sends the same bytes and
// the body compresses like prose, not like a repeated pattern.
func bigBounce(msg []byte, size int) []byte {
	msg = bytes.ReplaceAll(msg, []byte("Content-Type: text/rfc822-headers"), []byte("Content-Type: message/rfc822"))
	// Insert before the closing delimiter line ("--boundary--"), the last
	// line that starts and ends with "--"; at the end if there is none.
	at := len(msg)
	lines := bytes.SplitAfter(msg, []byte("\n"))
	off := 0
	for _, l := range lines {
		t := bytes.TrimRight(l, "\r\n")
		if len(t) > 4 && bytes.HasPrefix(t, []byte("--")) && bytes.HasSuffix(t, []byte("--")) {
			at = off
		}
		off += len(l)
	}
	words := []string{"the", "campaign", "news", "offer", "november", "update", "read", "more", "your",
		"account", "unsubscribe", "here", "latest", "product", "release", "notes", "team", "thanks",
		"customer", "service", "delivery", "order", "shipping", "free", "today", "week", "report"}
	rng := rand.New(rand.NewPCG(8, 8))
	var body bytes.Buffer
	var line []byte
	for body.Len() < size-len(msg) {
		line = line[:0]
		for len(line) < 70 {
			line = append(line, words[rng.IntN(len(words))]...)
			line = append(line, ' ')
		}
		body.Write(line)
		body.WriteString("\n")
	}
	out := make([]byte, 0, len(msg)+body.Len())
	out = append(out, msg[:at]...)
	out = append(out, body.Bytes()...)
	return append(out, msg[at:]...)
}
