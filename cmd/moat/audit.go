package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"moat/internal/api"
	"moat/internal/audit"
)

func newAudit(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "What is exposed on this server, what is weak, and the exact fix for each",
		Long: `audit reads the server back: what listens on which address and whether the
internet reaches it, sshd's effective settings against moat ssh harden's, and
moat's firewall (off, on trial, or changed by hand since moat applied it). Each
finding says why it matters and the exact fix: a command to run, or
moat audit fix CHECK where moat fixes it itself. The score is 100 less the
findings' weights (high 20, medium 8, low 3); the daemon audits every hour and
mails what got worse.`,
		Example: "  moat audit\n  moat audit --json\n  moat audit fix firewall.drift",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rep audit.Report
			if err := g.call(cmd, "GET", "/v1/audit", nil, &rep); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printReport(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.AddCommand(newAuditFix(g))
	return cmd
}

// printReport writes the audit for a person: the score, then each
// finding, worst first, with why and the fix.
func printReport(w io.Writer, rep audit.Report) {
	fmt.Fprintf(w, "Score: %d/100 (%d findings, %d checks passed)\n", rep.Score, len(rep.Findings), len(rep.Passed))
	for _, f := range rep.Findings {
		fmt.Fprintf(w, "\n[%s] %s  (%s, -%d)\n", strings.ToUpper(string(f.Severity)), f.Finding, f.Check, f.Weight)
		fmt.Fprintf(w, "  Why: %s\n  Fix: %s\n", f.Why, f.Fix)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "\nNot looked at: %s\n", p)
	}
}

func orAnyone(from []string) string {
	if len(from) == 0 {
		return "anyone"
	}
	return strings.Join(from, ", ")
}

func newAuditFix(g *globals) *cobra.Command {
	var req api.ApplyRequest
	var sshdConfig string
	cmd := &cobra.Command{
		Use:   "fix CHECK",
		Short: "Fix a finding moat can fix itself (firewall.drift, firewall.off)",
		Long: `fix does what a finding's fix says where moat can do it itself. For the
firewall's findings it puts the stored rules back in force with the same checks
as moat firewall apply: every SSH session open now must survive, and with
--confirm-within the rules roll back by themselves unless confirmed.`,
		Example: "  moat audit fix firewall.drift\n  moat audit fix firewall.off --confirm-within 60s",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// The plan first: what is wrong, and what the fix puts back.
			var rep audit.Report
			if err := g.call(cmd, "GET", "/v1/audit", nil, &rep); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			found := false
			for _, f := range rep.Findings {
				if f.Check == args[0] {
					found = true
					fmt.Fprintf(w, "Found: %s\n", f.Finding)
				}
			}
			if !found {
				fmt.Fprintf(w, "The audit finds nothing for %s now; the fix is made anyway.\n", args[0])
			}
			if strings.HasPrefix(args[0], "firewall.") {
				var fw api.FirewallStatus
				if err := g.call(cmd, "GET", "/v1/firewall", nil, &fw); err == nil {
					fmt.Fprintln(w, "The fix puts moat's stored rules in force, and only them:")
					for _, r := range fw.Rules {
						fmt.Fprintf(w, "  allow %s from %s\n", r.Port, orAnyone(r.From))
					}
					for _, r := range fw.AppPorts {
						fmt.Fprintf(w, "  allow %s (app %s)\n", r.Rule, r.App)
					}
				}
			}
			return firewallPost(g, cmd, "/v1/audit/fix/"+args[0], req, sshdConfig)
		},
	}
	applyFlags(cmd, &req, &sshdConfig)
	return cmd
}
