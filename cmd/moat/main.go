// Command moat is turnkey security for a self-hosted Linux server: an HTTPS
// edge with automatic certificates in front of every app, and the control
// plane that configures it. `moat serve` is the daemon; every other command
// talks to it over its control socket, or works on the store directly when
// no daemon runs.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"moat/internal/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		var ae *api.APIError
		if errors.As(err, &ae) {
			fmt.Fprintln(os.Stderr, "moat:", ae.Error())
		} else {
			fmt.Fprintln(os.Stderr, "moat:", err)
		}
		os.Exit(1)
	}
}
