package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"moat/internal/config"
	"moat/internal/guard"
)

func newGuardTest(g *globals) *cobra.Command {
	var jail, filter, literal string
	var show int
	cmd := &cobra.Command{
		Use:   "test [--jail NAME | --filter REGEX] FILE",
		Short: "Read a log through a jail's filter: what it matches, counts and would ban",
		Long: `test reads FILE (or - for standard input) with a jail's filter, as the guard
would, and prints the lines it matched, the failures counted per address, the
addresses the jail's settings would ban, the lines it let through that read
like failures (a word like failed, invalid or denied, and an address), and how
fast it read. Nothing is banned. Test a filter here before a jail trusts it.

--jail takes a jail of moat.yaml (sshd when neither is given); --filter a
regular expression (Go's RE2 syntax) with the client's address as
(?P<addr>...), and optionally (?P<user>...) and (?P<port>...), counted with
the default settings: 5 failures within 10 minutes ban for 10 minutes.
Lines carry their own time (syslog's or ISO 8601's timestamp).`,
		Example: `  moat guard test /var/log/auth.log
  moat guard test --jail gitea /var/lib/gitea/log/gitea.log
  moat guard test --filter 'Login failed for .* from (?P<addr>\S+)' app.log
  journalctl -u ssh -o short | moat guard test -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if show < 0 {
				return fmt.Errorf("--show %d: give how many lines to show, 0 or more", show)
			}
			j, err := testJail(g, cmd, jail, filter, literal)
			if err != nil {
				return err
			}
			in := cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("the log to test: %w", err)
				}
				defer f.Close()
				in = f
			}
			p := j.Policy(0)
			r, err := guard.ReplayLog(cmd.Context(), in, j.Matcher(), j.Name, p, nil, show, time.Now().Year())
			if err != nil {
				return err
			}
			printReplay(cmd.OutOrStdout(), r, j, p, show)
			return nil
		},
	}
	cmd.Flags().StringVar(&jail, "jail", "", "the jail whose filter and settings to use (sshd when neither --jail nor --filter is given)")
	cmd.Flags().StringVar(&filter, "filter", "", "a regular expression with (?P<addr>...) to test instead of a jail's")
	cmd.Flags().StringVar(&literal, "literal", "", "with --filter: a text every failure line contains (the expression runs only on those lines)")
	cmd.Flags().IntVar(&show, "show", 10, "how many lines, addresses and bans of each kind to show")
	cmd.MarkFlagsMutuallyExclusive("jail", "filter")
	return cmd
}

// testJail is the jail a test reads with: one of moat.yaml's by name, or
// a filter given on the command line with the default settings.
func testJail(g *globals, cmd *cobra.Command, name, filter, literal string) (config.Jail, error) {
	if filter != "" {
		f, err := guard.NewUserFilter("test", filter, literal)
		if err != nil {
			if fe := (*guard.FilterError)(nil); errors.As(err, &fe) {
				return config.Jail{}, fmt.Errorf("--filter %q %s; %s", fe.Expr, fe.Problem, fe.Fix)
			}
			return config.Jail{}, err
		}
		if g := guard.UnreadGroups(f); g != "" {
			return config.Jail{}, fmt.Errorf("--filter %q has a group moat does not read: %s; the groups are addr, user and port; write (?:...) for a group that captures nothing", filter, g)
		}
		return config.Jail{Name: "test", Filter: filter, Literal: literal}, nil
	}
	if literal != "" {
		return config.Jail{}, fmt.Errorf("--literal %q goes with --filter; a jail has its own literal", literal)
	}
	if name == "" {
		name = config.JailSSHD
	}
	s, err := getGuard(g, cmd)
	if err != nil {
		return config.Jail{}, err
	}
	j := config.Jail{Name: name}
	found := name == config.JailSSHD || name == config.JailMoat || name == config.JailMail
	var names []string
	for _, have := range s.Jails {
		names = append(names, have.Name)
		if have.Name == name {
			j, found = have, true
		}
	}
	if !found {
		return config.Jail{}, fmt.Errorf("--jail %q is not a jail of moat.yaml (there are %s); add it under guard.jails, or test an expression with --filter", name, strings.Join(names, ", "))
	}
	if j.Matcher() == nil {
		return config.Jail{}, fmt.Errorf("--jail %q counts failures moat itself sees (its own logins, an app's answers), not a log's lines: it has no filter to test; give the jail a filter, or test one with --filter", name)
	}
	return j, nil
}

func printReplay(w io.Writer, r guard.Replay, j config.Jail, p guard.Policy, show int) {
	fmt.Fprintf(w, "Read %s lines in %.2f s (%s lines/s) through jail %s: %d failures within %s ban for %s.\n",
		commas(r.Lines), r.Elapsed.Seconds(), commas(int(r.LinesPerSecond())), j.Name, p.MaxRetry, config.FormatDuration(p.FindTime), config.FormatDuration(p.BanTime))
	fmt.Fprintf(w, "\nMatched %s", count(r.Matched, "line", "lines"))
	list(w, r.Matched, len(r.Examples), ":")
	for _, l := range r.Examples {
		fmt.Fprintf(w, "  %s\n", l)
	}
	fmt.Fprintf(w, "\nFailures per address: %s", count(len(r.Attempts), "address", "addresses"))
	list(w, len(r.Attempts), min(show, len(r.Attempts)), ", the most first:")
	for _, a := range r.Attempts[:min(show, len(r.Attempts))] {
		fmt.Fprintf(w, "  %-40s %s\n", a.Addr, commas(a.Failures))
	}
	fmt.Fprintf(w, "\nWould ban %s", count(len(r.Bans), "address", "addresses"))
	list(w, len(r.Bans), min(show, len(r.Bans)), ", in the order of their first ban:")
	for _, b := range r.Bans[:min(show, len(r.Bans))] {
		fmt.Fprintf(w, "  %-40s first at %s, %s, the longest for %s\n", b.Prefix, b.First.Format(time.DateTime), times(b.Times), config.FormatDuration(b.Longest))
	}
	if r.Hints > 0 {
		fmt.Fprintf(w, "\nNot matched, but they read like failures: %s", count(r.Hints, "line", "lines"))
		list(w, r.Hints, len(r.HintLines), ":")
		for _, l := range r.HintLines {
			fmt.Fprintf(w, "  %s\n", l)
		}
		fmt.Fprintln(w, "If they are failed logins the filter misses, widen it; if they repeat a line it counts, leave them.")
	}
	if r.Untimed > 0 {
		fmt.Fprintf(w, "\n%s matched lines have no timestamp moat reads: each counts at the time of the line before it.\n", commas(r.Untimed))
	}
}

// list ends a heading: how many of all it shows, then end.
func list(w io.Writer, all, shown int, end string) {
	switch {
	case all == 0:
		fmt.Fprintln(w, ".")
	case shown < all:
		fmt.Fprintf(w, "; the first %d%s\n", shown, end)
	default:
		fmt.Fprintln(w, end)
	}
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return commas(n) + " " + many
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

// commas writes n with thousands separated, as 1,000,000.
func commas(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + commas(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
