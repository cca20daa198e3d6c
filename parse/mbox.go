package parse

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// MaxMboxMessage bounds one message of an mbox file in SplitMbox.
const MaxMboxMessage = 64 << 20

// SplitMbox calls fn with each message of an mbox file (messages that start
// with a "From " line, RFC 4155). The "From " line itself is dropped and
// ">From " quoting (mboxrd) is undone. Input that does not start with a
// "From " line is passed to fn whole, as one message. A message larger than
// MaxMboxMessage stops the split with an error wrapping ErrLimit. fn's
// error stops the split and is returned.
func SplitMbox(r io.Reader, fn func(msg []byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var msg []byte
	started, prevBlank, first := false, false, true
	flush := func() error {
		if len(msg) == 0 {
			return nil
		}
		err := fn(msg)
		msg = nil
		return err
	}
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line: keep reading it in pieces.
			err = nil
		}
		if len(line) > 0 {
			isSep := (first || started && prevBlank) && bytes.HasPrefix(line, []byte("From "))
			first = false
			if isSep {
				if e := flush(); e != nil {
					return e
				}
				started = true
			} else {
				if started && bytes.HasPrefix(line, []byte(">")) && bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From ")) {
					line = line[1:]
				}
				if len(msg)+len(line) > MaxMboxMessage {
					return fmt.Errorf("splitting mbox: message over %d bytes: %w", MaxMboxMessage, ErrLimit)
				}
				msg = append(msg, line...)
			}
			n := len(line)
			prevBlank = line[n-1] == '\n' && (n == 1 || n == 2 && line[0] == '\r')
			if line[n-1] != '\n' {
				prevBlank = false
			}
		}
		if err == io.EOF {
			return flush()
		}
		if err != nil {
			return fmt.Errorf("splitting mbox: %w", err)
		}
	}
}
