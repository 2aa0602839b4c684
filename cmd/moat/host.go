package main

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"moat/internal/api"
)

func newHost(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "host",
		Short: "The server itself: termination protection, reboot, power off",
		Example: `  moat host protect on
  moat host reboot`,
	}
	cmd.AddCommand(newHostProtect(g), newHostPower(g, "reboot", "Reboot the server (refused while it is protected)"),
		newHostPower(g, "poweroff", "Power the server off (refused while it is protected)"))
	return cmd
}

func newHostProtect(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "protect on|off",
		Example: "  moat host protect on\n  moat host protect off",
		Short:   "Turn the server's termination protection on or off",
		Long: "While on, moat refuses to reboot or power off the server, and holds a shutdown inhibitor where\n" +
			"systemd-logind runs, so that a stray systemctl reboot is refused too. Turning it off is logged and mailed.",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "on" && args[0] != "off" {
				return fmt.Errorf("protect %q: say on or off", args[0])
			}
			on := args[0] == "on"
			var res api.ChangeResponse
			if err := g.call(cmd, "PATCH", "/v1/server", api.ServerPatch{Protect: &on}, &res); err != nil {
				return err
			}
			return printChange(cmd.OutOrStdout(), res)
		},
	}
}

func newHostPower(g *globals, action, short string) *cobra.Command {
	var confirm string
	cmd := &cobra.Command{
		Use:     action,
		Short:   short,
		Example: "  moat host " + action + "\n  moat host " + action + " --confirm " + action,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("confirm") {
				fmt.Fprintf(cmd.OutOrStdout(), "Every app on this server goes down. Type %s to go on: ", action)
				answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				confirm = strings.TrimSpace(answer)
			}
			var out map[string]string
			if err := g.call(cmd, "POST", "/v1/host/"+action, api.HostRequest{Confirm: confirm}, &out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out["done"])
			return nil
		},
	}
	cmd.Flags().StringVar(&confirm, "confirm", "", "the word "+action+", typed back (for scripts)")
	return cmd
}
