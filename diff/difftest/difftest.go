// Package difftest builds incsapp task JSON for the tests and benchmarks of
// the packages downstream of diff: tasks shaped like the vendor's example
// (Chinese names and comments included) whose logs cycle through the four
// known types.
package difftest

import (
	"fmt"
	"strings"
)

// TasksJSON returns a JSON array of n tasks with ids from firstTask on,
// each with logsPer logs (created, assigned, status changed, commented,
// created, ...) whose ids run from firstLog on across the tasks.
func TasksJSON(firstTask int64, n, logsPer int, firstLog int64) []byte {
	var b strings.Builder
	b.WriteByte('[')
	lid := firstLog
	for i := range n {
		id := firstTask + int64(i)
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"creation_id":104,"auth_id":30058,"name":"4.8 回访任务 %d","description":"客户要求尽快联系，备注：\"优先\"","type":3,"user_name":"Erin","user_phone":"6281519140316","assignee_username":"incs_1","status":1,"created_at":"2026-04-08 17:22:01","updated_at":"2026-04-08 17:28:54","logs":[`, id, id)
		for j := range logsPer {
			if j > 0 {
				b.WriteByte(',')
			}
			typ := j%4 + 1
			assignee, comment, status, pre := "", "", 0, 0
			switch typ {
			case 2:
				assignee = "incs_1"
			case 3:
				assignee, status = "incs_1", 1
			case 4:
				assignee, status, pre, comment = "incs_1", 1, 1, "已经跟进，客户明天回电"
			}
			ts := fmt.Sprintf("2026-04-08 17:%02d:%02d", 22+j%30, int(lid%60))
			fmt.Fprintf(&b, `{"id":%d,"type":%d,"status":%d,"pre_status":%d,"assignee_username":%q,"comment":%q,"created_at":%q,"updated_at":%q}`,
				lid, typ, status, pre, assignee, comment, ts, ts)
			lid++
		}
		b.WriteString(`]}`)
	}
	b.WriteByte(']')
	return []byte(b.String())
}
