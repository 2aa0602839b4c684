package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"moat/internal/api"
	"moat/internal/mail"
	"moat/internal/maildns"
)

func newMail(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mail",
		Short: "The SMTP relay the apps send mail through, its queue and its DNS records",
		Long: `mail is the relay the apps on this server send their mail through. It listens
on loopback and private addresses only (port 587), each app logs in with its
own credentials and sends as <app>@<mail domain>, at most 300 messages an
hour. Accepted mail is kept on disk before it is answered, then delivered
through mail.smarthost or straight to each recipient's MX, signed with DKIM.`,
		Example: `  moat mail credentials gitea
  moat mail setup
  moat mail check
  moat mail queue`,
	}
	cmd.AddCommand(newMailStatus(g), newMailCredentials(g), newMailQueue(g), newMailRetry(g), newMailDrop(g), newMailSetup(g), newMailCheck(g))
	return cmd
}

func newMailStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Where the relay listens, where mail goes, and which apps can log in",
		Example: "  moat mail status",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st api.MailStatus
			if err := g.call(cmd, "GET", "/v1/mail", nil, &st); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch {
			case st.Off:
				fmt.Fprintln(w, "The relay is off (mail.off).")
			case !st.Running:
				fmt.Fprintln(w, "No daemon runs: moat serve starts the relay.")
			default:
				fmt.Fprintf(w, "Listening: %s\n", strings.Join(st.Listening, ", "))
			}
			fmt.Fprintf(w, "Mail domain: %s\nDelivery: %s\nQueued: %d\n", st.Domain, st.Delivery, st.Queued)
			if len(st.DKIM) == 0 {
				fmt.Fprintln(w, "DKIM: no keys yet (moat mail setup)")
			} else {
				fmt.Fprintf(w, "DKIM: %s\n", strings.Join(st.DKIM, ", "))
			}
			for _, c := range st.Credentials {
				state := "no credentials (moat mail credentials " + c.App + ")"
				if c.Set {
					state = "has credentials"
				}
				fmt.Fprintf(w, "  %s sends as %s: %s\n", c.App, c.Sender, state)
			}
			return nil
		},
	}
}

func newMailCredentials(g *globals) *cobra.Command {
	var req api.CredentialsRequest
	cmd := &cobra.Command{
		Use:   "credentials APP [--rotate]",
		Short: "Make an app's SMTP username and password (shown once)",
		Long: `credentials makes the SMTP login an app uses with the relay. The password is
shown this once: moat keeps only its argon2id hash. --rotate makes a new one
for an app that has credentials; the old password stops working at once.`,
		Example: `  moat mail credentials gitea
  moat mail credentials gitea --rotate`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.App = args[0]
			var res api.CredentialsResponse
			if err := g.call(cmd, "POST", "/v1/mail/credentials", req, &res); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			relay := "127.0.0.1:587"
			if len(res.Relay) > 0 {
				relay = strings.Join(res.Relay, " or ")
			}
			fmt.Fprintf(w, "SMTP credentials for %s (shown once; moat keeps only a hash):\n\n", res.App)
			fmt.Fprintf(w, "  server:   %s (STARTTLS)\n  username: %s\n  password: %s\n  from:     %s\n", relay, res.Username, res.Password, res.Sender)
			return nil
		},
	}
	cmd.Flags().BoolVar(&req.Rotate, "rotate", false, "replace the app's credentials; the old password stops working")
	return cmd
}

func newMailQueue(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "queue",
		Short:   "List the messages waiting to be delivered",
		Example: "  moat mail queue",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var q []mail.Message
			if err := g.call(cmd, "GET", "/v1/mail/queue", nil, &q); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if len(q) == 0 {
				fmt.Fprintln(w, "The queue is empty.")
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tAPP\tTO\tSIZE\tACCEPTED\tATTEMPTS\tNEXT\tLAST ERROR")
			for _, m := range q {
				next := m.NextAttempt.Local().Format(time.DateTime)
				if m.State == mail.Sending {
					next = "sending"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", m.ID, m.App, strings.Join(m.Pending(), ", "), m.Size, m.Accepted.Local().Format(time.DateTime), m.Attempts, next, m.LastError)
			}
			return tw.Flush()
		},
	}
}

func newMailRetry(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "retry ID|--all",
		Short:   "Try to deliver a waiting message (or all) now",
		Example: "  moat mail retry 3f2a9c0d1e4b5a6f\n  moat mail retry --all",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.RetryRequest{All: all}
			if len(args) == 1 {
				req.ID = args[0]
			}
			var res map[string][]string
			if err := g.call(cmd, "POST", "/v1/mail/queue/retry", req, &res); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d messages are tried again now.\n", len(res["retried"]))
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every waiting message")
	return cmd
}

func newMailDrop(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:     "drop ID",
		Short:   "Delete a message from the queue (asks first: it is lost)",
		Example: "  moat mail drop 3f2a9c0d1e4b5a6f\n  moat mail drop 3f2a9c0d1e4b5a6f --yes",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				fmt.Fprintf(cmd.OutOrStdout(), "Drop message %s? It will never be delivered. [y/N] ", args[0])
				answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return errors.New("not dropped")
				}
			}
			var m mail.Message
			if err := g.call(cmd, "DELETE", "/v1/mail/queue/"+url.PathEscape(args[0])+"?confirm=true", nil, &m); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Dropped %s (from %s of %s to %s).\n", m.ID, m.From, m.App, strings.Join(m.Pending(), ", "))
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "drop without asking")
	return cmd
}

func newMailSetup(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "setup",
		Short: "Make the DKIM keys and print the DNS records to publish (DKIM, SPF, DMARC)",
		Long: `setup makes moat's DKIM keys (Ed25519 and RSA-2048) the first time, and prints
the DNS records the mail domain needs so that receivers trust its mail. Run it
again to see them; moat mail check says which are published.`,
		Example: "  moat mail setup",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res api.SetupResponse
			if err := g.call(cmd, "POST", "/v1/mail/setup", nil, &res); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if res.Created {
				fmt.Fprintln(w, "DKIM keys made. Publish these DNS records:")
			} else {
				fmt.Fprintln(w, "The DKIM keys exist. These DNS records must be published:")
			}
			for _, r := range res.Records {
				printRecord(w, r)
			}
			fmt.Fprintln(w, "\nThen run: moat mail check")
			return nil
		},
	}
}

func printRecord(w io.Writer, r maildns.Record) {
	parts := maildns.TXTStrings(r.Value)
	for i, p := range parts {
		parts[i] = `"` + p + `"`
	}
	fmt.Fprintf(w, "\n%s\n  %s. IN %s %s\n", r.Why, r.Name, r.Type, strings.Join(parts, " "))
}

func newMailCheck(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "check",
		Short:   "Look up the mail domain's DKIM, SPF and DMARC records and say what is missing",
		Example: "  moat mail check",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var fs []maildns.Finding
			if err := g.call(cmd, "GET", "/v1/mail/check", nil, &fs); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			bad := 0
			for _, f := range fs {
				if f.OK {
					fmt.Fprintf(w, "ok       %s %s\n", f.Record.Type, f.Record.Name)
					continue
				}
				bad++
				fmt.Fprintf(w, "MISSING  %s %s: %s\n         Fix: %s\n", f.Record.Type, f.Record.Name, f.Problem, f.Fix)
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d records are not published as they should be", bad, len(fs))
			}
			fmt.Fprintln(w, "Every record is published.")
			return nil
		},
	}
}

func newNotify(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "notify",
		Short:   "Where alerts go: the log, server.notify.webhook and email",
		Example: "  moat notify test",
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "test",
		Short:   "Send a test alert everywhere alerts go",
		Example: "  moat notify test",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res api.NotifyTestResponse
			if err := g.call(cmd, "POST", "/v1/notify/test", nil, &res); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintln(w, "A test alert went to the log.")
			if res.Webhook {
				fmt.Fprintln(w, "It was posted to the webhook.")
			}
			if len(res.Email) > 0 {
				fmt.Fprintf(w, "It is queued for %s (moat mail queue shows it until it is delivered).\n", strings.Join(res.Email, ", "))
			} else {
				fmt.Fprintln(w, "No email: set server.email or server.notify.email.")
			}
			if res.Error != "" {
				return errors.New("not every destination took it: " + res.Error)
			}
			return nil
		},
	})
	return cmd
}
