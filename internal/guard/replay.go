package guard

// This file holds the replay: a log read through a jail's filter and
// policy, to show what the jail would count and ban before it is trusted
// (moat guard test).

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Replay is what a jail makes of a log: the lines it matched, the
// attempts per address, the bans it would decide, and the lines it let
// through that read like failures.
type Replay struct {
	Lines, Matched int
	// Examples are the first matched lines, as many as asked for.
	Examples []string
	// Attempts are the failures counted per address, most first.
	Attempts []Count
	// Bans are the prefixes the policy bans, in the order of their first
	// ban.
	Bans []WouldBan
	// Hints counts the unmatched lines that read like a failure (a word
	// like failed, invalid or denied, and an address); HintLines are the
	// first of them.
	Hints     int
	HintLines []string
	// Untimed counts the matched lines with no timestamp moat reads
	// (syslog's or ISO 8601): they count as if they came at once.
	Untimed int
	Elapsed time.Duration
}

// Count is the failures counted for one address.
type Count struct {
	Addr     netip.Addr
	Failures int
}

// WouldBan is a prefix the policy bans: when first, how often (a repeat
// doubles the ban, up to MaxBanTime), and the longest ban.
type WouldBan struct {
	Prefix  netip.Prefix
	First   time.Time
	Times   int
	Longest time.Duration
}

// LinesPerSecond is how fast the log was read.
func (r Replay) LinesPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Lines) / r.Elapsed.Seconds()
}

// ReplayLog reads in line by line through f, counting and banning as a
// jail named jail with policy p does, and keeps up to keep example lines
// of each kind. Lines carry their own time; year is the one syslog's
// timestamps (which have none) are read in.
func ReplayLog(in io.Reader, f Filter, jail string, p Policy, ignore []netip.Prefix, keep, year int) (Replay, error) {
	var r Replay
	det := NewDetector(jail, p, ignore)
	counts := map[netip.Addr]int{}
	bans := map[netip.Prefix]*WouldBan{}
	var order []netip.Prefix
	var untimedAt time.Time // the last time read, for lines without one
	var stamps stampCache
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	start := time.Now()
	for sc.Scan() {
		line := string(sc.Bytes())
		r.Lines++
		a, ok := f.Match(line)
		if !ok {
			if looksFailed(line) {
				r.Hints++
				if len(r.HintLines) < keep {
					r.HintLines = append(r.HintLines, line)
				}
			}
			continue
		}
		r.Matched++
		if len(r.Examples) < keep {
			r.Examples = append(r.Examples, line)
		}
		counts[a.Addr.Unmap()]++
		at, ok := stamps.time(line, year)
		if ok {
			untimedAt = at
		} else {
			r.Untimed++
			at = untimedAt
		}
		d, banned := det.Observe(a, line, at)
		if !banned {
			continue
		}
		b := bans[d.Prefix]
		if b == nil {
			b = &WouldBan{Prefix: d.Prefix, First: at}
			bans[d.Prefix] = b
			order = append(order, d.Prefix)
		}
		b.Times++
		b.Longest = max(b.Longest, d.Duration)
	}
	r.Elapsed = time.Since(start)
	if err := sc.Err(); err != nil {
		return r, fmt.Errorf("guard: reading the log after %d lines: %w", r.Lines, err)
	}
	for addr, n := range counts {
		r.Attempts = append(r.Attempts, Count{addr, n})
	}
	slices.SortFunc(r.Attempts, func(a, b Count) int {
		return cmp.Or(cmp.Compare(b.Failures, a.Failures), a.Addr.Compare(b.Addr))
	})
	for _, p := range order {
		r.Bans = append(r.Bans, *bans[p])
	}
	return r, nil
}

// failureWords are what a failed login's line says, in the spellings
// logs use; looksFailed looks for them before it looks for an address.
var failureWords = []string{"fail", "Fail", "FAIL", "invalid", "Invalid", "INVALID", "denied", "Denied", "DENIED",
	"refused", "Refused", "incorrect", "Incorrect", "nauthori", "wrong", "Wrong", "bad password", "Bad password"}

// looksFailed: the line has a failure's word and an IP address.
func looksFailed(line string) bool {
	for _, w := range failureWords {
		if strings.Contains(line, w) {
			return hasAddr(line)
		}
	}
	return false
}

// hasAddr reports whether line has an IP address in it: a run of hex
// digits, dots and colons shaped like one that parses as one. It
// allocates nothing: it runs on every line a filter lets through.
func hasAddr(line string) bool {
	for i := 0; i < len(line); {
		if !addrByte(line[i]) {
			i++
			continue
		}
		j, dots, colons := i, 0, 0
		for j < len(line) && addrByte(line[j]) {
			switch line[j] {
			case '.':
				dots++
			case ':':
				colons++
			}
			j++
		}
		if (dots == 3 && colons == 0) || colons >= 2 {
			if _, err := netip.ParseAddr(strings.Trim(line[i:j], ".:")); err == nil {
				return true
			}
			// "::ffff:192.0.2.1" and "[2001:db8::1]:22" parse as written.
			if _, err := netip.ParseAddr(line[i:j]); err == nil {
				return true
			}
		}
		i = j
	}
	return false
}

func addrByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || c == '.' || c == ':'
}

// stampCache keeps the last syslog timestamp read: a busy log has many
// lines to the second.
type stampCache struct {
	stamp string
	at    time.Time
}

func (c *stampCache) time(line string, year int) (time.Time, bool) {
	if len(line) > 15 && c.stamp != "" && line[:15] == c.stamp {
		return c.at, true
	}
	t, ok := lineTime(line, year)
	if ok && line[4] != '-' {
		c.stamp, c.at = line[:15], t
	}
	return t, ok
}

// lineTime reads a line's leading timestamp: syslog's "Mmm dd hh:mm:ss"
// (in year, local time) or ISO 8601's.
func lineTime(line string, year int) (time.Time, bool) {
	if _, ok := skipTimestamp(line); !ok {
		return time.Time{}, false
	}
	if line[4] == '-' {
		stamp, _, _ := strings.Cut(line, " ")
		t, err := time.Parse(time.RFC3339Nano, stamp)
		return t, err == nil
	}
	t, err := time.ParseInLocation("Jan _2 15:04:05", line[:15], time.Local)
	if err != nil {
		return time.Time{}, false
	}
	return t.AddDate(year, 0, 0), true
}
