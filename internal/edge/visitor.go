package edge

import (
	"context"
	"net/http"

	"moat/internal/config"
)

// The headers that tell a private app who its visitor is. The edge
// drops whatever a client sent under these names, for every app, and
// sets them only for a visitor that moat's sign-in let through.
const (
	UserHeader  = "X-Moat-User"
	EmailHeader = "X-Moat-Email"
)

// Visitor is who a private app's request comes from, as moat's sign-in
// established it.
type Visitor struct {
	// User is the account's name, or its email when it has none.
	User  string
	Email string
}

type visitorKey struct{}

// WithVisitor marks a request's context with its signed-in visitor, for
// the proxy to tell the app.
func WithVisitor(ctx context.Context, v Visitor) context.Context {
	return context.WithValue(ctx, visitorKey{}, v)
}

func visitorOf(ctx context.Context) (Visitor, bool) {
	v, ok := ctx.Value(visitorKey{}).(Visitor)
	return v, ok
}

// Private puts a private app behind moat's sign-in: it returns the app's
// chain with the gate in front (see internal/gate).
type Private func(app config.App, next http.Handler) http.Handler
