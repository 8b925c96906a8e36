package admin

// The admin API's client: what the commands and the bench harness use to
// ask a running relay.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls a running relay's admin API. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client of the admin API at addr (host:port) that
// sends token, when not empty, as a bearer token and gives up on a
// request after timeout.
func NewClient(addr, token string, timeout time.Duration) *Client {
	return &Client{base: "http://" + addr, token: token, http: &http.Client{Timeout: timeout}}
}

// APIError is an answer of the admin API other than 2xx, with the API's
// message.
type APIError struct {
	Method, Path string
	Status       int // the HTTP status
	Msg          string
}

// Error returns "admin API: METHOD PATH: HTTP status: message".
func (e *APIError) Error() string {
	return fmt.Sprintf("admin API: %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Msg)
}

// BadRequest reports whether the API refused the request itself (400 or
// 404: a bad parameter or an unknown sink), which commands treat as bad
// input.
func (e *APIError) BadRequest() bool {
	return e.Status == http.StatusBadRequest || e.Status == http.StatusNotFound
}

// Do sends a request with the query q and decodes a JSON answer into out
// (if not nil). A non-2xx answer is an *APIError carrying the API's
// message.
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %s %s: %w", method, path, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		msg := e.Error
		if msg == "" {
			msg = strings.TrimSpace(string(body))
		}
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Msg: msg}
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}
