package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"moat/internal/api"
	"moat/internal/config"
)

func newFirewall(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "firewall",
		Short: "Open ports to the world or to listed sources; everything else inbound is dropped",
		Long: `firewall manages moat's nftables table: inbound traffic is dropped unless a
rule opens its port, to any source or to listed addresses and prefixes.
Ports that Docker publishes obey the same rules.

allow, deny and delete change the stored rules; plan shows what apply would
change in the kernel; apply puts them in force. apply refuses rules that
would close the HTTP port while certificates renew over HTTP-01, the HTTPS
port while apps are served, or your own SSH connection (unless --force; use
--confirm-within so that the old rules come back by themselves unless you
run moat firewall confirm in time).`,
		Example: `  moat firewall allow 22/tcp --comment ssh
  moat firewall allow 5432/tcp from 203.0.113.0/24 --comment office
  moat firewall plan
  moat firewall apply --confirm-within 60s
  moat firewall confirm
  moat firewall list`,
	}
	cmd.AddCommand(newFirewallList(g), newFirewallAllow(g), newFirewallDeny(g), newFirewallDelete(g),
		newFirewallPlan(g), newFirewallApply(g), newFirewallConfirm(g), newFirewallOff(g), newFirewallOn(g))
	return cmd
}

// parseRuleArgs reads "PORT/PROTO [from SOURCE[,SOURCE...]]".
func parseRuleArgs(args []string) (config.FirewallRule, error) {
	r := config.FirewallRule{Port: args[0]}
	switch {
	case len(args) == 1:
	case len(args) == 3 && strings.EqualFold(args[1], "from"):
		for _, s := range strings.Split(args[2], ",") {
			if s = strings.TrimSpace(s); s != "" {
				r.From = append(r.From, s)
			}
		}
	default:
		return r, fmt.Errorf("%q: write PORT/PROTO, or PORT/PROTO from SOURCE[,SOURCE...], like 5432/tcp from 203.0.113.0/24", strings.Join(args, " "))
	}
	return r, nil
}

func getFirewall(g *globals, cmd *cobra.Command) (api.FirewallStatus, error) {
	var s api.FirewallStatus
	err := g.call(cmd, "GET", "/v1/firewall", nil, &s)
	return s, err
}

func newFirewallList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the rules, and whether they are in force",
		Example: "  moat firewall list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := getFirewall(g, cmd)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if len(s.Rules) == 0 {
				fmt.Fprintln(w, "No rules. Open SSH first: moat firewall allow 22/tcp --comment ssh")
			} else {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "#\tPORT\tFROM\tCOMMENT")
				for i, r := range s.Rules {
					from := "any"
					if len(r.From) > 0 {
						from = strings.Join(r.From, ",")
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", i+1, r.Port, from, r.Comment)
				}
				tw.Flush()
			}
			for _, a := range s.AppPorts {
				fmt.Fprintf(w, "app %s: %s (%s)\n", a.App, a.Rule, a.Access)
			}
			printFirewallState(w, s)
			return nil
		},
	}
}

// printFirewallState says whether the rules are in force.
func printFirewallState(w io.Writer, s api.FirewallStatus) {
	switch {
	case !s.Managed:
		fmt.Fprintln(w, "The daemon is not running (or does not manage the firewall): these rules are stored, and moat serve puts them in force when it starts.")
	case s.Off:
		fmt.Fprintln(w, "The firewall is OFF: moat's table is removed and the server is open to whatever other firewall rules allow. moat firewall on restores it.")
	case !s.Active:
		fmt.Fprintln(w, "The firewall is not in force yet: moat firewall apply.")
	case len(s.Plan.Add)+len(s.Plan.Remove) > 0:
		fmt.Fprintln(w, "In force, but the stored rules differ: see moat firewall plan.")
	default:
		fmt.Fprintln(w, "In force.")
	}
	if s.Pending {
		fmt.Fprintln(w, "A change waits for confirmation: moat firewall confirm, or it rolls back by itself.")
	}
}

func newFirewallAllow(g *globals) *cobra.Command {
	var comment string
	cmd := &cobra.Command{
		Use:   "allow PORT/PROTO [from SOURCE[,SOURCE...]]",
		Short: "Add a rule that opens a port (stored; moat firewall apply puts it in force)",
		Example: `  moat firewall allow 443/tcp
  moat firewall allow 5432/tcp from 203.0.113.0/24 --comment office
  moat firewall allow 60000-61000/udp --comment mosh`,
		Args: cobra.RangeArgs(1, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRuleArgs(args)
			if err != nil {
				return err
			}
			r.Comment = comment
			var res api.ChangeResponse
			if err := g.call(cmd, "POST", "/v1/firewall/rules", r, &res); err != nil {
				return err
			}
			if err := printChange(cmd.OutOrStdout(), res); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Stored. moat firewall apply puts it in force.")
			return nil
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "what the rule is for, like office")
	return cmd
}

func newFirewallDeny(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "deny PORT/PROTO [from SOURCE[,SOURCE...]]",
		Short: "Remove the rule that opens a port (stored; moat firewall apply puts it in force)",
		Long: `deny removes the rule that opens PORT/PROTO; with from, the rule for exactly
those sources. Without a rule, a port is closed: inbound traffic is dropped
by default.`,
		Example: `  moat firewall deny 5432/tcp
  moat firewall deny 5432/tcp from 203.0.113.0/24`,
		Args: cobra.RangeArgs(1, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := parseRuleArgs(args)
			if err != nil {
				return err
			}
			var res api.ChangeResponse
			if err := g.call(cmd, "DELETE", "/v1/firewall/rules", r, &res); err != nil {
				return err
			}
			if err := printChange(cmd.OutOrStdout(), res); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Stored. moat firewall apply puts it in force.")
			return nil
		},
	}
}

func newFirewallDelete(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NUMBER",
		Short:   "Remove a rule by its number in moat firewall list",
		Example: "  moat firewall delete 3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			s, lerr := getFirewall(g, cmd)
			if lerr != nil {
				return lerr
			}
			if err != nil || n < 1 || n > len(s.Rules) {
				return fmt.Errorf("%q: give a rule's number from moat firewall list (1 to %d)", args[0], len(s.Rules))
			}
			var res api.ChangeResponse
			if err := g.call(cmd, "DELETE", "/v1/firewall/rules", s.Rules[n-1], &res); err != nil {
				return err
			}
			return printChange(cmd.OutOrStdout(), res)
		},
	}
}

func newFirewallPlan(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "plan",
		Short:   "Show the rules moat firewall apply would add and remove",
		Example: "  moat firewall plan",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := getFirewall(g, cmd)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if s.Plan.Unknown {
				fmt.Fprintln(w, "What is in force is not known (nothing applied since the daemon started); apply would put in force:")
			}
			for _, r := range s.Plan.Add {
				fmt.Fprintf(w, "+ allow %s\n", r)
			}
			for _, r := range s.Plan.Remove {
				fmt.Fprintf(w, "- allow %s\n", r)
			}
			if len(s.Plan.Add)+len(s.Plan.Remove) == 0 {
				fmt.Fprintln(w, "No changes: the rules in force are the stored ones.")
			}
			return nil
		},
	}
}

func newFirewallApply(g *globals) *cobra.Command {
	return newFirewallPut(g, "/v1/firewall/apply", &cobra.Command{
		Use:   "apply",
		Short: "Put the stored rules in force",
		Example: `  moat firewall apply
  moat firewall apply --confirm-within 60s`,
	})
}

func newFirewallOn(g *globals) *cobra.Command {
	return newFirewallPut(g, "/v1/firewall/on", &cobra.Command{
		Use:     "on",
		Short:   "Put the stored rules back in force after moat firewall off",
		Example: "  moat firewall on",
	})
}

// newFirewallPut completes a command that puts the rules in force
// (apply, on): its flags, and the request to path.
func newFirewallPut(g *globals, path string, cmd *cobra.Command) *cobra.Command {
	var req api.ApplyRequest
	var sshdConfig string
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return firewallPost(g, cmd, path, req, sshdConfig)
	}
	applyFlags(cmd, &req, &sshdConfig)
	return cmd
}

// applyFlags are the flags of a command that puts the rules in force.
func applyFlags(cmd *cobra.Command, req *api.ApplyRequest, sshdConfig *string) {
	cmd.Flags().StringVar(&req.ConfirmWithin, "confirm-within", "", "roll back by itself unless moat firewall confirm comes within this time, like 60s")
	cmd.Flags().BoolVar(&req.Force, "force", false, "apply even if the rules would cut your own SSH connection (needs --confirm-within)")
	cmd.Flags().StringVar(sshdConfig, "sshd-config", "/etc/ssh/sshd_config", "sshd's configuration: every SSH session open to its ports must survive the rules")
}

// firewallPost sends an apply-like request with the caller's SSH
// connection, for the lockout check.
func firewallPost(g *globals, cmd *cobra.Command, path string, req api.ApplyRequest, sshdConfig string) error {
	req.SSHConnection = sshConnection()
	req.SSHPorts, _ = sshdPorts(sshdConfig)
	var s api.FirewallStatus
	if err := g.call(cmd, "POST", path, req, &s); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	printFirewallState(w, s)
	if req.ConfirmWithin != "" {
		fmt.Fprintf(w, "Check that you can still connect (open a new SSH session), then run moat firewall confirm within %s; otherwise the previous rules come back by themselves.\n", req.ConfirmWithin)
	}
	return nil
}

func newFirewallConfirm(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "confirm",
		Short:   "Keep the rules applied with --confirm-within",
		Example: "  moat firewall confirm",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var s api.FirewallStatus
			if err := g.call(cmd, "POST", "/v1/firewall/confirm", nil, &s); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Confirmed: the new rules stay.")
			return nil
		},
	}
}

func newFirewallOff(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "off",
		Short:   "Remove moat's firewall table (the rules are kept; on restores them)",
		Example: "  moat firewall off",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var s api.FirewallStatus
			if err := g.call(cmd, "POST", "/v1/firewall/off", nil, &s); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "WARNING: the firewall is off. Every port that something listens on is reachable, unless other firewall rules stop it. moat firewall on restores the rules.")
			return nil
		},
	}
}

// sshConnection is the SSH_CONNECTION of this command or of the first
// process above it that has one: sudo and su drop it from the
// environment, but the owner's login shell still holds it.
func sshConnection() string {
	if v := os.Getenv("SSH_CONNECTION"); v != "" {
		return v
	}
	pid := os.Getppid()
	for range 16 {
		if pid <= 1 {
			break
		}
		if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil {
			for kv := range strings.SplitSeq(string(env), "\x00") {
				if v, ok := strings.CutPrefix(kv, "SSH_CONNECTION="); ok && v != "" {
					return v
				}
			}
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 {
			break
		}
		pid, _ = strconv.Atoi(f[1])
	}
	return ""
}
