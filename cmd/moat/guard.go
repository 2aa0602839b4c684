package main

import (
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"moat/internal/api"
	"moat/internal/guard"
)

func newGuard(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "guard",
		Short: "The brute-force guard: bans addresses that fail to log in too often",
		Long: `guard reads sshd's log (and the logs of jails you add), counts failed logins
per address, and bans an address that fails 5 times in 10 minutes for 10
minutes, in the kernel's firewall and at the edge. Each new ban of the same
address lasts twice as long, up to a week. Loopback and the addresses on the
ignore list are never banned.

Tune it in moat.yaml under guard: (jails, ignore); these commands show the
bans and change them by hand.`,
		Example: `  moat guard list
  moat guard ignore-me
  moat guard ban 203.0.113.7 --for 24h --reason "spam"
  moat guard unban 203.0.113.7
  moat guard stats
  moat guard test /var/log/auth.log`,
	}
	cmd.AddCommand(newGuardList(g), newGuardBan(g), newGuardUnban(g), newGuardIgnore(g), newGuardIgnoreMe(g), newGuardUnignore(g), newGuardStats(g), newGuardTest(g))
	return cmd
}

func getGuard(g *globals, cmd *cobra.Command) (api.GuardStatus, error) {
	var s api.GuardStatus
	err := g.call(cmd, "GET", "/v1/guard", nil, &s)
	return s, err
}

func newGuardList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the bans in force, the jails and the ignore list",
		Example: "  moat guard list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := getGuard(g, cmd)
			if err != nil {
				return err
			}
			printGuard(cmd.OutOrStdout(), s, time.Now())
			return nil
		},
	}
}

func printGuard(w io.Writer, s api.GuardStatus, now time.Time) {
	switch {
	case s.Off:
		fmt.Fprintln(w, "The guard is off (guard.off in moat.yaml): nothing is read and nothing banned.")
	case !s.Running:
		fmt.Fprintln(w, "No moat daemon runs: nothing is read and nothing banned until moat serve starts.")
	}
	if len(s.Bans) == 0 {
		fmt.Fprintln(w, "No bans in force.")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ADDRESS\tJAIL\tLEFT\tREASON")
		for _, b := range s.Bans {
			left := "until lifted"
			if d := b.Left(now); d >= 0 {
				left = d.Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Prefix, b.Jail, left, b.Reason)
		}
		tw.Flush()
	}
	var jails []string
	for _, j := range s.Jails {
		source := j.Log
		switch {
		case j.Name == "moat":
			source = "moat's own logins"
		case source == "":
			source = "auth.log or the journal"
		}
		jails = append(jails, fmt.Sprintf("%s (%s)", j.Name, source))
	}
	if len(jails) > 0 {
		fmt.Fprintf(w, "Jails: %s\n", strings.Join(jails, ", "))
	}
	if len(s.Ignore) > 0 {
		fmt.Fprintf(w, "Never banned: loopback, %s\n", strings.Join(s.Ignore, ", "))
	} else {
		fmt.Fprintln(w, "Never banned: loopback. Add your own address with moat guard ignore-me.")
	}
}

func newGuardBan(g *globals) *cobra.Command {
	var req api.BanRequest
	cmd := &cobra.Command{
		Use:   "ban ADDRESS",
		Short: "Ban an address or a prefix by hand",
		Long: `ban drops every packet from ADDRESS (an address, or a CIDR prefix) in the
kernel and refuses it at the edge, for --for (24h by default; 0 bans until
moat guard unban). A ban of your own SSH connection, of loopback or of an
ignore-listed address is refused.`,
		Example: `  moat guard ban 203.0.113.7
  moat guard ban 198.51.100.0/24 --for 168h --reason "scanner"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Address = args[0]
			req.SSHConnection = sshConnection()
			var b guard.Ban
			if err := g.call(cmd, "POST", "/v1/guard/bans", req, &b); err != nil {
				return err
			}
			until := "until moat guard unban " + b.Prefix.String()
			if !b.Expires.IsZero() {
				until = "until " + b.Expires.Local().Format(time.DateTime)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Banned %s %s.\n", b.Prefix, until)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.For, "for", "", "how long, like 1h or 168h; 0 for until lifted (default 24h)")
	cmd.Flags().StringVar(&req.Reason, "reason", "", "why, for the activity log")
	return cmd
}

func newGuardUnban(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "unban ADDRESS",
		Short:   "Lift a ban",
		Example: "  moat guard unban 203.0.113.7",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b guard.Ban
			if err := g.call(cmd, "DELETE", "/v1/guard/bans?address="+url.QueryEscape(args[0]), nil, &b); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Lifted the ban of %s.\n", b.Prefix)
			return nil
		},
	}
}

func newGuardIgnore(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ignore ADDRESS",
		Short:   "Never ban an address or a prefix (your office, your VPN)",
		Example: "  moat guard ignore 203.0.113.0/24",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return guardIgnore(g, cmd, api.IgnoreRequest{Address: args[0]})
		},
	}
}

func newGuardIgnoreMe(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ignore-me",
		Short: "Never ban the address you are connected from over SSH",
		Long: `ignore-me adds the address of your SSH connection (from SSH_CONNECTION, also
under sudo) to the ignore list, and lifts a ban of it if there is one. For
an IPv6 address it adds its /64 (server.rate_limit.ipv6_prefix): the guard
counts IPv6 per /64, and your devices change their addresses within it.`,
		Example: "  moat guard ignore-me",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return guardIgnore(g, cmd, api.IgnoreRequest{Me: true, SSHConnection: sshConnection()})
		},
	}
}

func guardIgnore(g *globals, cmd *cobra.Command, req api.IgnoreRequest) error {
	var res api.ChangeResponse
	if err := g.call(cmd, "POST", "/v1/guard/ignore", req, &res); err != nil {
		return err
	}
	return printChange(cmd.OutOrStdout(), res)
}

func newGuardUnignore(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "unignore ADDRESS",
		Short:   "Take an address or a prefix off the ignore list",
		Example: "  moat guard unignore 203.0.113.0/24",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res api.ChangeResponse
			if err := g.call(cmd, "DELETE", "/v1/guard/ignore?address="+url.QueryEscape(args[0]), nil, &res); err != nil {
				return err
			}
			return printChange(cmd.OutOrStdout(), res)
		},
	}
}

func newGuardStats(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "stats",
		Short:   "Show what the guard has read, recognised and banned since moat started",
		Example: "  moat guard stats",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := getGuard(g, cmd)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if s.Stats == nil {
				fmt.Fprintln(w, "No moat daemon runs, so there is nothing to count.")
				return nil
			}
			st := s.Stats
			fmt.Fprintf(w, "Bans in force: %d; addresses being counted: %d; unbans: %d\n", st.Active, st.Tracked, st.Unbans)
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "JAIL\tLINES\tFAILURES\tBANS")
			names := map[string]bool{}
			for _, m := range []map[string]int64{st.Lines, st.Failures, st.Bans} {
				for k := range m {
					names[k] = true
				}
			}
			for _, j := range s.Jails {
				names[j.Name] = true
			}
			sorted := make([]string, 0, len(names))
			for k := range names {
				sorted = append(sorted, k)
			}
			sort.Strings(sorted)
			for _, k := range sorted {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", k, st.Lines[k], st.Failures[k], st.Bans[k])
			}
			return tw.Flush()
		},
	}
}
