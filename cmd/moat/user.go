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

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"moat/internal/api"
	"moat/internal/auth"
)

func newUser(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "The accounts that sign in to the HTTPS API and the dashboard",
		Long: `user manages the accounts that sign in on the admin host (server.admin_domain,
moat.<domain> by default). Roles: admin (everything, accounts too),
operator (everything but accounts), viewer (reads only). Every sign-in
takes a second factor: a code mailed to the account, or an authenticator.

passwd and reset-mfa are the recovery path, for root on the server only.`,
		Example: "  moat user add owner@example.com --role admin\n  moat user list\n  moat user reset-mfa owner@example.com",
	}
	cmd.AddCommand(newUserAdd(g), newUserList(g), newUserRemove(g), newUserPasswd(g), newUserResetMFA(g))
	return cmd
}

// readPassword asks for a password on a terminal without echo, or reads
// one line from standard input.
func readPassword(cmd *cobra.Command, prompt string) (string, error) {
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		return string(b), nil
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the password from standard input: %w", err)
	}
	if line = strings.TrimRight(line, "\r\n"); line == "" {
		return "", errors.New("no password was given: type it at the prompt, or pipe it on standard input")
	}
	return line, nil
}

// addAccount adds the account req: with the password asked with prompt,
// or, when prompt is empty, with an invitation printed once. what names
// the account in the reply ("the first admin, ").
func addAccount(g *globals, cmd *cobra.Command, req api.UserRequest, prompt, what string) error {
	if prompt != "" {
		pw, err := readPassword(cmd, prompt)
		if err != nil {
			return err
		}
		req.Password = pw
	}
	var nu api.NewUser
	if err := g.call(cmd, "POST", "/v1/users", req, &nu); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "Added %s%s (%s).\n", what, nu.Email, nu.Role)
	if nu.Invitation != "" {
		fmt.Fprintf(w, "Invitation (shown once, valid 24 hours): %s\n", nu.Invitation)
		fmt.Fprintln(w, "The password is set with it: POST /v1/auth/invitation on the admin host (or moat user passwd "+nu.Email+" as root here).")
	}
	return nil
}

func newUserAdd(g *globals) *cobra.Command {
	var role, name string
	var withPassword bool
	cmd := &cobra.Command{
		Use:   "add EMAIL",
		Short: "Add an account: with a password, or an invitation link valid 24 hours",
		Long: `add makes an account. Without --password, it prints a one-time invitation,
valid for 24 hours, with which the person sets their own password.`,
		Example: "  moat user add ops@example.com --role operator\n  moat user add owner@example.com --role admin --password",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prompt := ""
			if withPassword {
				prompt = "Password for " + args[0] + ": "
			}
			return addAccount(g, cmd, api.UserRequest{Email: args[0], Name: name, Role: auth.Role(role)}, prompt, "")
		},
	}
	cmd.Flags().StringVar(&role, "role", string(auth.RoleViewer), "admin, operator or viewer")
	cmd.Flags().StringVar(&name, "name", "", "the person's name")
	cmd.Flags().BoolVar(&withPassword, "password", false, "set the password now (asked, or read from standard input)")
	return cmd
}

func newUserList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the accounts",
		Example: "  moat user list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []api.Account
			if err := g.call(cmd, "GET", "/v1/users?limit=1000", nil, &list); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "EMAIL\tROLE\tSECOND FACTOR\tCREATED")
			for _, a := range list {
				mfa := string(a.MFA)
				if a.Invited {
					mfa = "(invited)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Email, a.Role, mfa, a.Created.Format("2006-01-02"))
			}
			return tw.Flush()
		},
	}
}

func newUserRemove(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:     "remove EMAIL",
		Short:   "Remove an account (asks; the last admin stays)",
		Example: "  moat user remove ops@example.com",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				fmt.Fprintf(cmd.OutOrStdout(), "Remove the account %s? Its sessions and tokens end. [y/N] ", args[0])
				answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return errors.New("not removed")
				}
			}
			if err := g.call(cmd, "DELETE", "/v1/users/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed %s.\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "remove without asking")
	return cmd
}

func newUserPasswd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "passwd EMAIL",
		Short:   "Set an account's password (root on the server only); its sessions end",
		Example: "  moat user passwd owner@example.com\n  echo 'a long new passphrase' | moat user passwd owner@example.com",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd, "New password for "+args[0]+": ")
			if err != nil {
				return err
			}
			if err := g.call(cmd, "PUT", "/v1/users/"+url.PathEscape(args[0])+"/password", api.PasswordSet{Password: pw}, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "The password of %s is set; its sessions have ended.\n", args[0])
			return nil
		},
	}
}

func newUserResetMFA(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "reset-mfa EMAIL",
		Short:   "Take an account's authenticator off (root on the server only): it signs in with a mailed code again",
		Example: "  moat user reset-mfa owner@example.com",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a api.Account
			if err := g.call(cmd, "POST", "/v1/users/"+url.PathEscape(args[0])+"/reset-mfa", nil, &a); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s signs in with a code mailed to it now (second factor: %s).\n", a.Email, a.MFA)
			return nil
		},
	}
}
