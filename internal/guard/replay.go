package guard

// This file holds the replay: a log read through a jail's filter and
// policy, to show what the jail would count and ban before it is trusted
// (moat guard test).

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
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

// ReplayLog reads in through f, counting and banning as a jail named
// jail with policy p does, and keeps up to keep example lines of each
// kind. Lines carry their own time; year is the one syslog's timestamps
// (which have none) are read in.
//
// The lines are matched on every core, a block of them at a time (f must
// be safe for concurrent use, as the guard's filters are), and counted in
// the log's order.
func ReplayLog(ctx context.Context, in io.Reader, f Filter, jail string, p Policy, ignore []netip.Prefix, keep, year int) (Replay, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workers := runtime.GOMAXPROCS(0)
	blocks := make(chan block, 2*workers)
	results := make(chan matchedBlock, 2*workers)
	var readErr error
	start := time.Now()
	go func() {
		defer close(blocks)
		readErr = readBlocks(ctx, in, blocks)
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var stamps stampCache
			for b := range blocks {
				results <- matchBlock(b, f, keep, year, &stamps)
			}
		})
	}
	go func() {
		wg.Wait()
		close(results)
	}()

	var r Replay
	det := NewDetector(jail, p, ignore)
	counts := map[netip.Addr]int{}
	bans := map[netip.Prefix]*WouldBan{}
	bannedUntil := map[netip.Prefix]time.Time{}
	var order []netip.Prefix
	var untimedAt time.Time // the last time read, for lines without one
	count := func(m match) {
		r.Matched++
		if len(r.Examples) < keep {
			r.Examples = append(r.Examples, m.line)
		}
		counts[m.a.Addr.Unmap()]++
		at := m.at
		if m.timed {
			untimedAt = at
		} else {
			r.Untimed++
			at = untimedAt
		}
		// A banned address cannot try again until its ban ends, as the
		// live guard skips it.
		key := det.key(m.a.Addr.Unmap())
		if end, ok := bannedUntil[key]; ok && at.Before(end) {
			return
		}
		d, banned := det.Observe(m.a, m.line, at)
		if !banned {
			return
		}
		bannedUntil[d.Prefix] = at.Add(d.Duration)
		b := bans[d.Prefix]
		if b == nil {
			b = &WouldBan{Prefix: d.Prefix, First: at}
			bans[d.Prefix] = b
			order = append(order, d.Prefix)
		}
		b.Times++
		b.Longest = max(b.Longest, d.Duration)
	}
	// The blocks come back in any order, and count in the log's.
	waiting := map[int]matchedBlock{}
	next := 0
	for res := range results {
		waiting[res.seq] = res
		for {
			mb, ok := waiting[next]
			if !ok {
				break
			}
			delete(waiting, next)
			next++
			r.Lines += mb.lines
			r.Hints += mb.hints
			for _, l := range mb.hintLines {
				if len(r.HintLines) < keep {
					r.HintLines = append(r.HintLines, l)
				}
			}
			for _, m := range mb.matched {
				count(m)
			}
		}
	}
	r.Elapsed = time.Since(start)
	if readErr != nil {
		return r, fmt.Errorf("guard: reading the log after %d lines: %w", r.Lines, readErr)
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

// block is a run of whole lines of the log, the seq'th.
type block struct {
	seq  int
	text string
}

// matchedBlock is what a filter made of a block.
type matchedBlock struct {
	seq, lines int
	matched    []match
	hints      int
	hintLines  []string
}

type match struct {
	a     Attempt
	line  string
	at    time.Time
	timed bool
}

// blockSize is how much of the log a block holds; maxLine is the longest
// line read (as the guard's tail reads them).
const (
	blockSize = 256 << 10
	maxLine   = 1 << 20
)

// readBlocks cuts in into blocks of whole lines.
func readBlocks(ctx context.Context, in io.Reader, out chan<- block) error {
	buf := make([]byte, blockSize)
	have, seq := 0, 0
	send := func(b []byte) error {
		select {
		case out <- block{seq, string(b)}:
			seq++
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		n, err := in.Read(buf[have:])
		have += n
		if end := bytes.LastIndexByte(buf[:have], '\n'); end >= 0 {
			if err := send(buf[:end+1]); err != nil {
				return err
			}
			have = copy(buf, buf[end+1:have])
		} else if have == len(buf) {
			if len(buf) >= maxLine {
				return fmt.Errorf("a line is longer than %d bytes", maxLine)
			}
			buf = append(buf, make([]byte, len(buf))...)
		}
		if err == io.EOF {
			if have > 0 {
				return send(buf[:have])
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// matchBlock runs f on each line of b.
func matchBlock(b block, f Filter, keep, year int, stamps *stampCache) matchedBlock {
	mb := matchedBlock{seq: b.seq}
	text := b.text
	for len(text) > 0 {
		line, rest, _ := strings.Cut(text, "\n")
		text = rest
		line = strings.TrimSuffix(line, "\r")
		mb.lines++
		a, ok := f.Match(line)
		if !ok {
			if looksFailed(line) {
				mb.hints++
				if len(mb.hintLines) < keep {
					mb.hintLines = append(mb.hintLines, strings.Clone(line))
				}
			}
			continue
		}
		// Its own copy: a ban's evidence must not keep the block.
		line = strings.Clone(line)
		at, timed := stamps.time(line, year)
		mb.matched = append(mb.matched, match{a, line, at, timed})
	}
	return mb
}

// looksFailed: the line has a failure's word (failed, invalid, denied,
// refused, incorrect, unauthorized, wrong, bad password, in any case) and
// an IP address. It runs on every line a filter lets through, so it reads
// the line once, letter by letter, and allocates nothing.
func looksFailed(line string) bool {
	for i := 0; i < len(line); i++ {
		var stem string
		switch line[i] | 0x20 {
		case 'f':
			stem = "fail"
		case 'i':
			stem = "in" // invalid, incorrect
		case 'd':
			stem = "denied"
		case 'r':
			stem = "refused"
		case 'u':
			stem = "unauthori"
		case 'w':
			stem = "wrong"
		case 'b':
			stem = "bad password"
		default:
			continue
		}
		rest := line[i:]
		if stem == "in" && !(hasFold(rest, "invalid") || hasFold(rest, "incorrect")) || stem != "in" && !hasFold(rest, stem) {
			continue
		}
		// Not the timestamp's colons.
		if rest, ok := skipTimestamp(line); ok {
			line = rest
		}
		return hasAddr(line)
	}
	return false
}

// hasFold reports whether s starts with lower, a lower-case ASCII word,
// in any case.
func hasFold(s, lower string) bool {
	if len(s) < len(lower) {
		return false
	}
	for i := 0; i < len(lower); i++ {
		if s[i]|0x20 != lower[i] {
			return false
		}
	}
	return true
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
	month := time.Month(strings.Index(months, line[:3])/3 + 1)
	day, ok1 := digits(strings.TrimLeft(line[4:6], " "))
	h, ok2 := digits(line[7:9])
	m, ok3 := digits(line[10:12])
	sec, ok4 := digits(line[13:15])
	if !ok1 || !ok2 || !ok3 || !ok4 || day < 1 || day > 31 || h > 23 || m > 59 || sec > 60 {
		return time.Time{}, false
	}
	return time.Date(year, month, day, h, m, sec, 0, time.Local), true
}

const months = "JanFebMarAprMayJunJulAugSepOctNovDec"

// digits reads a short run of decimal digits.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, s != ""
}
