package poller

// Decoding a 2xx body into a Page: the envelope, the tasks, their raw
// JSON and their heads, strictly. The fast path that skips unchanged
// tasks is head.go.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/jsonscan"
)

// envelope is the API's answer. Pointers tell a missing member from a zero.
type envelope struct {
	Status  string          `json:"status"`
	Code    json.RawMessage `json:"code"`
	Message string          `json:"message"`
	Data    *pageData       `json:"data"`
}

type pageData struct {
	Total *int        `json:"total"`
	Tasks *[]wireTask `json:"data"`
}

// wireTask is diff.Task without its UnmarshalJSON: encoding/json decodes a
// page of them in one pass, and attachRaw then gives each task its raw JSON
// with a light scan instead of a second and third full parse.
type wireTask diff.Task

// attachRaw copies the page's task array out of body once and points each
// task's (and log's) Raw into the copy. It leaves Raw unset if the array
// cannot be matched to tasks, which only costs a re-encode later.
func attachRaw(body []byte, tasks []diff.Task) {
	data, ok := jsonscan.RawMember(body, "data")
	if !ok {
		return
	}
	arr, ok := jsonscan.RawMember(data, "data")
	if !ok {
		return
	}
	els := jsonscan.RawElements(bytes.Clone(arr))
	if len(els) != len(tasks) {
		return
	}
	for i := range tasks {
		tasks[i].AttachRaw(els[i])
	}
}

// decodePage decodes a 2xx body of the page requested with the given number
// and size. The body is decoded once; each diff.Task keeps a copy of its raw
// JSON, so body may be reused afterwards. Every failure is an *APIError of
// kind KindEnvelope or KindDecode.
func decodePage(body []byte, number, size int) (*Page, error) {
	var env envelope
	err := jsonv1.Unmarshal(body, &env)
	var typeErr *jsonv1.UnmarshalTypeError
	if err != nil && !errors.As(err, &typeErr) {
		return nil, &APIError{Kind: KindDecode, Page: number, Err: err}
	}
	// An error envelope may carry data of any shape: report it by its status
	// and code, whatever else failed to decode.
	code, codeErr := parseCode(env.Code)
	if env.Status != "success" || codeErr != nil || code != http.StatusOK {
		if env.Status == "" && len(env.Code) == 0 {
			return nil, &APIError{Kind: KindDecode, Page: number, Message: "no status or code in body"}
		}
		return nil, &APIError{Kind: KindEnvelope, Page: number, Status: env.Status, Code: code, Message: shorten(env.Message)}
	}
	if err != nil {
		return nil, &APIError{Kind: KindDecode, Page: number, Err: err}
	}
	if env.Data == nil {
		return nil, &APIError{Kind: KindDecode, Page: number, Message: "missing data"}
	}
	if env.Data.Total == nil {
		return nil, &APIError{Kind: KindDecode, Page: number, Message: "missing data.total"}
	}
	total := *env.Data.Total
	if total < 0 {
		return nil, &APIError{Kind: KindDecode, Page: number, Message: fmt.Sprintf("data.total %d", total)}
	}
	var tasks []diff.Task
	if env.Data.Tasks != nil {
		ws := *env.Data.Tasks
		tasks = make([]diff.Task, len(ws))
		for i := range ws {
			tasks[i] = diff.Task(ws[i])
		}
		attachRaw(body, tasks)
	} else if total > (number-1)*size {
		// The API says this page holds tasks but sent none.
		return nil, &APIError{Kind: KindDecode, Page: number, Message: fmt.Sprintf("missing data.data with data.total %d", total)}
	}
	var heads []TaskHead
	if len(tasks) > 0 {
		heads = make([]TaskHead, len(tasks))
	}
	for i := range tasks {
		t := &tasks[i]
		if t.ID <= 0 {
			return nil, &APIError{Kind: KindDecode, Page: number, Message: fmt.Sprintf("task %d of the page has no id", i+1)}
		}
		for j := range t.Logs {
			if t.Logs[j].ID <= 0 {
				return nil, &APIError{Kind: KindDecode, Page: number, Message: fmt.Sprintf("task %d: log %d has no id", t.ID, j+1)}
			}
		}
		heads[i] = headOf(t)
	}
	return &Page{Total: total, Tasks: tasks, Heads: heads, Number: number, Size: size}, nil
}

// parseCode reads an envelope code sent as a number or a numeric string.
func parseCode(raw json.RawMessage) (int, error) {
	return strconv.Atoi(strings.Trim(string(raw), `"`))
}
