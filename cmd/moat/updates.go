package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"moat/internal/api"
	"moat/internal/updates"
)

func newUpdates(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "updates",
		Short: "Unattended security updates: set up, shown, taken back",
		Long: `updates sets up unattended-upgrades with moat's own apt drop-ins
(/etc/apt/apt.conf.d/` + updates.UnattendedFile + ` and ` + updates.PeriodicFile + `): the security
archives of Debian and Ubuntu, daily runs, and a reboot window for the updates
that need one (never while the server's termination protection is on).`,
		Example: "  moat updates enable --reboot-window 02:00\n  moat updates status\n  moat updates disable",
	}
	var req api.UpdatesRequest
	enable := &cobra.Command{
		Use:     "enable",
		Short:   "Turn unattended security updates on, with a reboot window",
		Example: "  moat updates enable\n  moat updates enable --install --reboot-window 04:30",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.UpdatesChange
			if err := g.call(cmd, "POST", "/v1/updates/enable", req, &out); err != nil {
				return err
			}
			for _, f := range out.Files {
				fmt.Fprintf(cmd.OutOrStdout(), "Wrote %s\n", f)
			}
			printUpdates(cmd.OutOrStdout(), out.Status)
			return nil
		},
	}
	enable.Flags().StringVar(&req.RebootWindow, "reboot-window", "", "when a reboot an update needs happens, HH:MM local time (02:00 when not given)")
	enable.Flags().BoolVar(&req.Install, "install", false, "install unattended-upgrades first when it is missing")
	disable := &cobra.Command{
		Use:     "disable",
		Short:   "Remove moat's drop-ins (and nothing else)",
		Example: "  moat updates disable",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out api.UpdatesChange
			if err := g.call(cmd, "POST", "/v1/updates/disable", struct{}{}, &out); err != nil {
				return err
			}
			for _, f := range out.Files {
				fmt.Fprintf(cmd.OutOrStdout(), "Removed %s\n", f)
			}
			printUpdates(cmd.OutOrStdout(), out.Status)
			return nil
		},
	}
	status := &cobra.Command{
		Use:     "status",
		Short:   "How updates are set up, the last run, and whether a reboot is pending",
		Example: "  moat updates status",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st updates.Status
			if err := g.call(cmd, "GET", "/v1/updates", nil, &st); err != nil {
				return err
			}
			printUpdates(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.AddCommand(enable, disable, status)
	return cmd
}

// printUpdates says how updates stand, as apt reads it.
func printUpdates(w io.Writer, s updates.Status) {
	on := "off"
	switch {
	case !s.Installed:
		on = "off: unattended-upgrades is not installed (moat updates enable --install)"
	case s.Periodic && s.Security:
		on = "on: security updates daily"
	case s.Periodic:
		on = "on, but with no security archive among the origins"
	}
	fmt.Fprintf(w, "Unattended updates: %s\n", on)
	if s.Enabled {
		fmt.Fprintln(w, "Set up by moat: yes")
	}
	switch {
	case s.Reboot && !s.RebootWithUsers:
		fmt.Fprintf(w, "Reboots: at %s when an update needs one, unless someone is logged in\n", s.RebootTime)
	case s.Reboot:
		fmt.Fprintf(w, "Reboots: at %s when an update needs one\n", s.RebootTime)
	default:
		fmt.Fprintln(w, "Reboots: never by themselves")
	}
	if !s.LastRun.IsZero() {
		fmt.Fprintf(w, "Last run: %s", s.LastRun.Format(time.DateTime))
		if len(s.LastInstalled) > 0 {
			fmt.Fprintf(w, ", installed %s", strings.Join(s.LastInstalled, ", "))
		}
		fmt.Fprintln(w)
	}
	if s.RebootRequired {
		fmt.Fprintf(w, "A reboot is pending, asked for by %s\n", strings.Join(s.RebootPackages, ", "))
	}
}
