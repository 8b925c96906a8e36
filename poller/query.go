package poller

// What a request asks for (Query, and its query string) and what it
// returns (Page).

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// Query selects tasks. Nil pointers, an empty Name and zero times are
// omitted from the request. StartAt and EndAt filter by creation time and
// are sent in the client's Location. CreatedFrom and CreatedTo, when not
// zero, are sent as start_at and end_at instead: they name wall-clock
// times of the API's zone exactly, also where a daylight-saving change
// makes a time.Time skip or repeat them. All four bounds are inclusive, to
// the second. Page defaults to 1 and PageSize to the client's page size,
// capped at MaxPageSize.
type Query struct {
	TaskID      *int64
	CreationID  *int64
	Type        *int
	Status      *int
	Name        string
	StartAt     time.Time
	EndAt       time.Time
	CreatedFrom WallTime
	CreatedTo   WallTime
	Page        int
	PageSize    int
	// Pages, when above 0, is the most pages a sweep reads, from Page on:
	// 1 reads Page alone, with nothing fetched ahead.
	Pages int
}

// encode returns q as a query string, times formatted in loc. Spaces are
// sent as %20, which every server decodes, rather than form-style '+'.
func (q *Query) encode(loc *time.Location) string {
	v := make(url.Values, 9)
	if q.TaskID != nil {
		v.Set("task_id", strconv.FormatInt(*q.TaskID, 10))
	}
	if q.CreationID != nil {
		v.Set("creation_id", strconv.FormatInt(*q.CreationID, 10))
	}
	if q.Type != nil {
		v.Set("type", strconv.Itoa(*q.Type))
	}
	if q.Status != nil {
		v.Set("status", strconv.Itoa(*q.Status))
	}
	if q.Name != "" {
		v.Set("name", q.Name)
	}
	switch {
	case q.CreatedFrom != 0:
		v.Set("start_at", q.CreatedFrom.String())
	case !q.StartAt.IsZero():
		v.Set("start_at", q.StartAt.In(loc).Format(diff.TimeLayout))
	}
	switch {
	case q.CreatedTo != 0:
		v.Set("end_at", q.CreatedTo.String())
	case !q.EndAt.IsZero():
		v.Set("end_at", q.EndAt.In(loc).Format(diff.TimeLayout))
	}
	if q.Page > 0 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if q.PageSize > 0 {
		v.Set("page_size", strconv.Itoa(q.PageSize))
	}
	return strings.ReplaceAll(v.Encode(), "+", "%20")
}

// Page is one page of tasks as the API returned it.
type Page struct {
	// Total is the number of tasks matching the query, as the API counted
	// them when it answered.
	Total int
	// Tasks are the page's tasks in the API's order, each with its raw JSON;
	// with a Skipper, only those it did not skip.
	Tasks []diff.Task
	// Heads are every task of the page in brief, in the API's order,
	// skipped or not.
	Heads []TaskHead
	// Number is the page number, from 1.
	Number int
	// Size is the page size requested.
	Size int
}
