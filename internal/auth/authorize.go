package auth

import "fmt"

// Area is the part of moat a request reaches, as the API's routes map to
// it.
type Area string

// The areas. AreaAll is a change that can reach every area at once (a
// whole new desired state); AreaAccounts is the accounts of others and
// their sign-in settings.
const (
	AreaApps     Area = "apps"
	AreaFirewall Area = "firewall"
	AreaGuard    Area = "guard"
	AreaSSH      Area = "ssh"
	AreaMail     Area = "mail"
	AreaServer   Area = "server"
	AreaAccounts Area = "accounts"
	AreaAll      Area = "all"
)

// Allow decides whether an account of role, through a token of scope (or
// a signed-in session, scope ""), may read (write false) or change an
// area. It is the one place this is decided; a refusal says why.
func Allow(role Role, scope Scope, area Area, write bool) error {
	switch role {
	case RoleAdmin:
	case RoleOperator:
		if area == AreaAccounts || area == AreaAll && write {
			return fmt.Errorf("an operator cannot manage accounts or replace the whole state: ask an admin")
		}
	case RoleViewer:
		if write {
			return fmt.Errorf("a viewer can only read: ask an admin for the operator role")
		}
		if area == AreaAccounts {
			return fmt.Errorf("a viewer cannot see the accounts: ask an admin")
		}
	default:
		return fmt.Errorf("the account has no known role (%q)", role)
	}
	switch scope {
	case "", ScopeAdmin:
		return nil
	case ScopeRead:
		if write {
			return fmt.Errorf("this token's scope is read: it cannot change anything; make a token with the write scope")
		}
		return nil
	case ScopeWrite:
		if area == AreaAccounts || area == AreaAll && write {
			return fmt.Errorf("this token's scope is write, which does not reach accounts or the whole state: that needs the admin scope")
		}
		return nil
	case ScopeFirewall, ScopeGuard, ScopeApps, ScopeSSH, ScopeMail:
		if Area(scope) != area {
			return fmt.Errorf("this token's scope is %s: it reaches only /v1/%s, not %s", scope, scope, area)
		}
		return nil
	}
	return fmt.Errorf("the token has no known scope (%q)", scope)
}
