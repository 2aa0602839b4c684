package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"moat/internal/api"
)

func newSSH(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ssh",
		Short: "SSH: the public keys that may log in, managed by title",
		Long: `ssh manages the public keys that may log in over SSH. moat keeps them in files
of its own, one per user (under /etc/moat/ssh/authorized_keys), which an sshd
drop-in adds to AuthorizedKeysFile; each user's own ~/.ssh/authorized_keys
is left as it is and still works.`,
		Example: `  moat ssh keys add --title laptop ~/.ssh/id_ed25519.pub
  moat ssh keys list
  moat ssh keys remove laptop`,
	}
	keys := &cobra.Command{
		Use:   "keys",
		Short: "Add, list and remove the keys that may log in",
		Example: `  moat ssh keys add --title laptop ~/.ssh/id_ed25519.pub
  moat ssh keys list
  moat ssh keys remove laptop`,
	}
	keys.AddCommand(newSSHKeysAdd(g), newSSHKeysList(g), newSSHKeysRemove(g))
	cmd.AddCommand(keys, newSSHHarden(g), newSSHConfirm(g), newSSHAudit(g))
	return cmd
}

func newSSHHarden(g *globals) *cobra.Command {
	var req api.HardenRequest
	cmd := &cobra.Command{
		Use:   "harden",
		Short: "Turn password login off and harden sshd, unless that would lock everyone out",
		Long: `harden puts the settings every hardening guide starts with in a drop-in of
moat's: no password or keyboard-interactive login, root by key only, 3 tries
per connection, 30 s to log in, no X11 forwarding. It is refused, naming who
would be locked out, unless someone who can log in has a key.

The new settings wait --confirm-within (120 s) for moat ssh confirm, which
you run from a NEW SSH session that logs in with your key: if that works,
you keep a way in. Without it, the previous settings come back by
themselves.`,
		Example: `  moat ssh harden
  moat ssh harden --confirm-within 5m
  moat ssh harden --port 2222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req.SSHConnection = sshConnection()
			var res api.HardenResponse
			if err := g.call(cmd, "POST", "/v1/ssh/harden", req, &res); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "sshd is hardened: password login is off, root logs in by key only.\n")
			fmt.Fprintf(w, "Users with a key: %s\n", strings.Join(res.WithKeys, ", "))
			if len(res.LockedOut) > 0 {
				fmt.Fprintf(w, "WARNING: %s log in with a password and have no key: they are locked out until they get one (moat ssh keys add --user NAME).\n", strings.Join(res.LockedOut, ", "))
			}
			fmt.Fprintf(w, "Now open a NEW SSH session with your key and run: moat ssh confirm\nWithout it, the previous settings come back at %s.\n", res.ConfirmBy.Local().Format(time.TimeOnly))
			return nil
		},
	}
	cmd.Flags().StringVar(&req.ConfirmWithin, "confirm-within", "120s", "how long the new settings wait for moat ssh confirm")
	cmd.Flags().IntVar(&req.Port, "port", 0, "move sshd to this port: the firewall opens it first; the old port closes once you confirm")
	return cmd
}

func newSSHConfirm(g *globals) *cobra.Command {
	var console bool
	cmd := &cobra.Command{
		Use:     "confirm",
		Short:   "Keep the settings of moat ssh harden (run it from a new session that used your key)",
		Example: "  moat ssh confirm",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res api.AuditResponse
			if err := g.call(cmd, "POST", "/v1/ssh/confirm", api.ConfirmRequest{SSHConnection: sshConnection(), Console: console}, &res); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Confirmed: the hardened settings stay.")
			return nil
		},
	}
	cmd.Flags().BoolVar(&console, "console", false, "confirm at the server's console, with no SSH session to prove a key login")
	return cmd
}

func newSSHAudit(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "audit",
		Short:   "Compare sshd's effective settings with the recommended ones, each difference with its fix",
		Example: "  moat ssh audit",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res api.AuditResponse
			if err := g.call(cmd, "GET", "/v1/ssh/audit", nil, &res); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if res.Pending {
				fmt.Fprintln(w, "A hardening waits for its confirmation: moat ssh confirm, from a new session.")
			}
			if len(res.Findings) == 0 {
				fmt.Fprintln(w, "sshd's effective settings are the recommended ones.")
				return nil
			}
			for _, f := range res.Findings {
				who := ""
				if f.For != "" {
					who = " for " + f.For
				}
				fmt.Fprintf(w, "%s is %s%s, should be %s: %s.\n  Fix: %s\n", f.Keyword, f.Have, who, f.Want, f.Why, f.Fix)
			}
			return nil
		},
	}
}

func newSSHKeysAdd(g *globals) *cobra.Command {
	var req api.AddKeyRequest
	cmd := &cobra.Command{
		Use:   "add --title TITLE [--user NAME] [FILE|-]",
		Short: "Authorize a public key (a .pub file, or standard input)",
		Long: `add authorizes a public key to log in as --user (root by default). The key is
read from FILE, or standard input when it is - or left out. ed25519, ECDSA
and security keys (sk-*) are accepted, RSA of 3072 bits or more too (2048
with a warning); DSA, smaller RSA keys and anything that is not a public
key are refused. Options in front of the key (from="...", command="...")
are kept.`,
		Example: `  moat ssh keys add --title laptop ~/.ssh/id_ed25519.pub
  moat ssh keys add --title ci --user deploy - < ci.pub`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = cmd.InOrStdin()
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			b, err := io.ReadAll(io.LimitReader(in, 64<<10))
			if err != nil {
				return err
			}
			req.Key = strings.TrimSpace(string(b))
			if req.Title == "" {
				return errors.New("--title is missing: name the key, like --title laptop")
			}
			var res api.AddKeyResponse
			if err := g.call(cmd, "POST", "/v1/ssh/keys", req, &res); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			k := res.Key
			fmt.Fprintf(w, "Added %s for %s: %s %d %s\n", k.Title, k.User, k.Type, k.Bits, k.Fingerprint)
			if k.Warning != "" {
				fmt.Fprintf(w, "Warning: %s\n", k.Warning)
			}
			if res.Warning != "" {
				return fmt.Errorf("%s (run the same command again to retry)", res.Warning)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Title, "title", "", "what to call the key, like laptop (required)")
	cmd.Flags().StringVar(&req.User, "user", "", "the account the key logs in as (default root)")
	return cmd
}

func newSSHKeysList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the keys: title, user, type, bits, fingerprint, options, who added them and when",
		Example: "  moat ssh keys list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var keys []api.SSHKey
			if err := g.call(cmd, "GET", "/v1/ssh/keys", nil, &keys); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if len(keys) == 0 {
				fmt.Fprintln(w, "No keys. Add yours: moat ssh keys add --title laptop ~/.ssh/id_ed25519.pub")
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TITLE\tUSER\tTYPE\tBITS\tFINGERPRINT\tOPTIONS\tADDED")
			for _, k := range keys {
				added := k.AddedBy
				if !k.AddedAt.IsZero() {
					added += " " + k.AddedAt.Local().Format(time.DateTime)
				}
				opts := strings.Join(k.Options, ",")
				if opts == "" {
					opts = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", k.Title, k.SSHKey.User, k.Type, k.Bits, k.Fingerprint, opts, strings.TrimSpace(added))
			}
			return tw.Flush()
		},
	}
}

func newSSHKeysRemove(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "remove TITLE|FINGERPRINT",
		Short: "Remove a key (asks first: it may be your own way in)",
		Example: `  moat ssh keys remove laptop
  moat ssh keys remove SHA256:Xk9... --yes`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				fmt.Fprintf(cmd.OutOrStdout(), "Remove key %s? Whoever logs in with it, maybe you, will no longer get in. [y/N] ", args[0])
				answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return errors.New("not removed")
				}
			}
			var res api.ChangeResponse
			if err := g.call(cmd, "DELETE", "/v1/ssh/keys?confirm=true&key="+url.QueryEscape(args[0]), nil, &res); err != nil {
				return err
			}
			return printChange(cmd.OutOrStdout(), res)
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "remove without asking")
	return cmd
}
