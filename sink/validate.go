package sink

// The checks of sink settings that need no I/O (statuses, networks, locale,
// chat settings), each returning a *FieldError that names the config key;
// the config validation calls them.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink/chat"
)

// FieldError is an invalid sink setting. Field is the setting's config key
// relative to the sink ("locale", "statuses[1]", "deny_networks[0]") and
// Msg says what is wrong; neither ever holds a secret. The Check functions
// return it, so the config validation names the key without restating the
// rule.
type FieldError struct {
	Field string
	Msg   string
}

// Error returns "field: msg".
func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// CheckStatuses checks a status filter: each entry is a task status,
// diff.StatusNotStarted to diff.StatusTerminated.
func CheckStatuses(statuses []int) error {
	for i, s := range statuses {
		if s < diff.StatusNotStarted || s > diff.StatusTerminated {
			return &FieldError{Field: fmt.Sprintf("statuses[%d]", i),
				Msg: fmt.Sprintf("%d is not a task status (0 not started, 1 in progress, 2 completed, 3 terminated)", s)}
		}
	}
	return nil
}

// CheckNetworks checks an outbound guard's lists: every entry is a CIDR
// network such as "10.0.0.0/8" or "fd00::/8" (see NewGuard).
func CheckNetworks(deny, allow []string) error {
	_, _, err := parseNetworks(deny, allow)
	return err
}

// parseNetworks parses the guard lists; its error is a *FieldError.
func parseNetworks(deny, allow []string) (denied, allowed []netip.Prefix, err error) {
	for _, set := range []struct {
		name string
		in   []string
		out  *[]netip.Prefix
	}{{"deny_networks", deny, &denied}, {"allow_networks", allow, &allowed}} {
		for i, s := range set.in {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, nil, &FieldError{Field: fmt.Sprintf("%s[%d]", set.name, i), Msg: fmt.Sprintf("%q is not a CIDR network such as 10.0.0.0/8", s)}
			}
			*set.out = append(*set.out, p.Masked())
		}
	}
	return denied, allowed, nil
}

// CheckLocale checks a chat sink's locale: "zh", "en", or "" for the
// platform's default.
func CheckLocale(locale string) error {
	if locale != "" && !slices.Contains(chat.Locales(), locale) {
		return &FieldError{Field: "locale", Msg: fmt.Sprintf("must be %s, got %q", strings.Join(chat.Locales(), " or "), locale)}
	}
	return nil
}

// CheckChatConfig checks the settings of a chat sink that need no I/O and
// no template run: locale, link, rate limit and burst (its statuses are its FilterConfig's, see CheckStatuses). NewSlack
// and NewFeishu check more (the URL, the template on the sample events).
func CheckChatConfig(cfg ChatConfig) error {
	if err := CheckLocale(cfg.Locale); err != nil {
		return err
	}
	if err := chat.CheckLink(cfg.Link); err != nil {
		return &FieldError{Field: "link", Msg: err.Error()}
	}
	if cfg.RateLimit < 0 {
		return &FieldError{Field: "rate_limit", Msg: "must not be negative"}
	}
	if cfg.Burst < 0 {
		return &FieldError{Field: "burst", Msg: "must not be negative"}
	}
	return nil
}
