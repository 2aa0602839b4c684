package upstream

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
)

// checkHeader refuses what net/http's Transport refuses: a field name that
// is not a token, a value with a control character (which could end the
// line and start a forged header).
func checkHeader(h http.Header) error {
	for k, vs := range h {
		if !validName(k) {
			return fmt.Errorf("upstream: invalid header field name %q", k)
		}
		for _, v := range vs {
			if !validValue(v) {
				return fmt.Errorf("upstream: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// writeRequest writes the request line and header of a request without a
// body (see handles).
func writeRequest(bw *bufio.Writer, r *http.Request) error {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	if err := WriteRequestLine(bw, r.Method, r.URL.RequestURI(), host); err != nil {
		return err
	}
	for k, vs := range r.Header {
		switch k {
		case "Host", "Connection":
			continue // the Host line above; hop-by-hop, set below
		case "User-Agent":
			if len(vs) == 1 && vs[0] == "" {
				continue // the client sent none: send none (ReverseProxy's marker)
			}
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	if r.Close {
		bw.WriteString("Connection: close\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// ErrInvalidRequest marks a request that cannot be sent as it is: the
// visitor's mistake (or attack), not the app's.
var ErrInvalidRequest = errors.New("invalid request")

// WriteField writes one header line, if name and value may stand in one:
// a field name that is not a token, or a value with a control character
// (which could end the line and start a forged header), is refused.
func WriteField(bw *bufio.Writer, name, value string) error {
	if !validName(name) {
		return fmt.Errorf("%w: header field name %q", ErrInvalidRequest, name)
	}
	if !validValue(value) {
		return fmt.Errorf("%w: header field value for %q", ErrInvalidRequest, name)
	}
	writeField(bw, name, value)
	return nil
}

// WriteRequestLine writes "METHOD TARGET HTTP/1.1" and the Host line.
func WriteRequestLine(bw *bufio.Writer, method, target, host string) error {
	if !validURI(target) {
		return fmt.Errorf("%w: request target", ErrInvalidRequest) // the target is not logged: queries can hold secrets
	}
	if !validValue(host) || host == "" {
		return fmt.Errorf("%w: Host %q", ErrInvalidRequest, host)
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(target)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	return nil
}

func writeField(bw *bufio.Writer, name, value string) {
	bw.WriteString(name)
	bw.WriteString(": ")
	bw.WriteString(value)
	bw.WriteString("\r\n")
}

// validName reports whether s is an HTTP token (RFC 9110, section 5.1).
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validValue reports whether s may be a field value: no control
// characters but horizontal tab (RFC 9110, section 5.5).
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validURI reports whether s can stand in a request line: not empty, and
// no space or control character.
func validURI(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}
