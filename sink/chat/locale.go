package chat

// The words of chat messages in each locale (en, zh).

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// The words of the messages, per locale ("en", "zh").

// locale holds the words of one locale.
type locale struct {
	status                                                    [4]string
	unknownStatus                                             string // %d
	titleCreated, titleAssigned, titleStatus, titleComment    string
	titleLogged                                               string
	labelStatus, labelAssignee, labelUser, labelComment       string
	labelLog, labelTask                                       string
	assignedWas, unassigned, unknownLog, openTask, digestNote string
	digestTitle, digestSpan                                   string
	lineCreated, lineAssigned, lineComment, lineLogged        string
	// Derived events: "stalled for 4 h", "no longer stalled", the rule's
	// words for known rule event names, and units.
	lineDerived, lineResolved, titleDerived   string
	labelSince, labelRule, labelStep          string
	unitDay, unitHour, unitMinute, unitSecond string
	derivedWords                              map[string]string
	// Changes that leave no log: titles, "renamed: A → B" (lineChange
	// with the field's word), the one-line changes, and the words of the
	// task's fields.
	titleUpdated, titleCommentEdited, titleLogUpdated, titleDeleted string
	labelChanges, labelWas, empty                                   string
	lineChange, lineCommentEdited, lineLogUpdated, lineDeleted      string
	fieldWords                                                      map[string]string
}

// Locales returns the locales a Renderer knows, sorted: "en", "zh".
func Locales() []string { return slices.Sorted(maps.Keys(locales)) }

var locales = map[string]*locale{
	"en": {
		status:        [4]string{"not started", "in progress", "completed", "terminated"},
		unknownStatus: "status %d",
		titleCreated:  "New task: %s",
		titleAssigned: "Task assigned: %s",
		titleStatus:   "Task %s: %s",
		titleComment:  "New comment on %s",
		titleLogged:   "Task update: %s",
		labelStatus:   "Status",
		labelAssignee: "Assignee",
		labelUser:     "User",
		labelComment:  "Comment",
		labelLog:      "Log",
		labelTask:     "Task",
		assignedWas:   "%s (was %s)",
		unassigned:    "unassigned",
		unknownLog:    "log type %s",
		openTask:      "Open task",
		digestTitle:   "%d task updates",
		digestSpan:    "%d task updates between %s and %s, sent as one message: they came faster than this channel's rate limit.",
		digestNote:    "sent as one message: updates came faster than this channel's rate limit",
		lineCreated:   "created",
		lineAssigned:  "assigned to %s",
		lineComment:   "comment: %s",
		lineLogged:    "log type %s",
		lineDerived:   "%s for %s",
		lineResolved:  "no longer %s (was %s)",
		titleDerived:  "Task %s: %s",
		labelSince:    "Since",
		labelRule:     "Rule",
		labelStep:     "Reminder",
		unitDay:       "%d d", unitHour: "%d h", unitMinute: "%d min", unitSecond: "%d s",
		derivedWords: map[string]string{"stalled": "stalled", "overdue": "overdue", "late": "late", "unassigned": "unassigned"},

		titleUpdated:       "Task edited: %s",
		titleCommentEdited: "Comment edited on %s",
		titleLogUpdated:    "Task log updated: %s",
		titleDeleted:       "Task deleted: %s",
		labelChanges:       "Changes",
		labelWas:           "Before the edit",
		empty:              "(empty)",
		lineChange:         "%s: %s → %s",
		lineCommentEdited:  "comment edited: %s",
		lineLogUpdated:     "log %s updated",
		lineDeleted:        "deleted",
		fieldWords: map[string]string{"name": "renamed", "description": "description", "type": "type",
			"creation_id": "creation id", "auth_id": "auth id", "user_name": "user", "user_phone": "phone",
			"status": "status", "assignee_username": "reassigned", "comment": "comment", "updated_at": "updated at"},
	},
	"zh": {
		status:        [4]string{"未开始", "进行中", "已完成", "被终止"},
		unknownStatus: "状态 %d",
		titleCreated:  "新任务：%s",
		titleAssigned: "任务已分配：%s",
		titleStatus:   "任务%s：%s",
		titleComment:  "任务有新备注：%s",
		titleLogged:   "任务动态：%s",
		labelStatus:   "状态",
		labelAssignee: "负责人",
		labelUser:     "用户",
		labelComment:  "备注",
		labelLog:      "日志",
		labelTask:     "任务",
		assignedWas:   "%s（原为 %s）",
		unassigned:    "未分配",
		unknownLog:    "日志类型 %s",
		openTask:      "查看任务",
		digestTitle:   "%d 条任务动态",
		digestSpan:    "%[2]s 至 %[3]s 共 %[1]d 条任务动态，因超过本群机器人的发送频率限制而合并为一条消息。",
		digestNote:    "合并发送：任务动态的到达速度超过了本群机器人的发送频率限制",
		lineCreated:   "新建",
		lineAssigned:  "分配给 %s",
		lineComment:   "备注：%s",
		lineLogged:    "日志类型 %s",
		lineDerived:   "%s %s",
		lineResolved:  "已解除%s（持续 %s）",
		titleDerived:  "任务%s：%s",
		labelSince:    "起始",
		labelRule:     "规则",
		labelStep:     "提醒",
		unitDay:       "%d 天", unitHour: "%d 小时", unitMinute: "%d 分钟", unitSecond: "%d 秒",
		derivedWords: map[string]string{"stalled": "已停滞", "overdue": "已逾期", "late": "已超时", "unassigned": "无人负责"},

		titleUpdated:       "任务已修改：%s",
		titleCommentEdited: "任务备注已修改：%s",
		titleLogUpdated:    "任务日志已更新：%s",
		titleDeleted:       "任务已删除：%s",
		labelChanges:       "修改",
		labelWas:           "修改前",
		empty:              "（空）",
		lineChange:         "%s：%s → %s",
		lineCommentEdited:  "备注已修改：%s",
		lineLogUpdated:     "日志 %s 已更新",
		lineDeleted:        "已删除",
		fieldWords: map[string]string{"name": "名称", "description": "描述", "type": "类型",
			"creation_id": "创建 ID", "auth_id": "授权 ID", "user_name": "用户", "user_phone": "电话",
			"status": "状态", "assignee_username": "负责人", "comment": "备注", "updated_at": "更新时间"},
	},
}

// derivedWord is the locale's word for a rule's event type, or the type's
// name with underscores as spaces.
func (l *locale) derivedWord(eventType string) string {
	name := strings.TrimSuffix(diff.ShortType(eventType), "_resolved")
	if w, ok := l.derivedWords[name]; ok {
		return w
	}
	return strings.ReplaceAll(name, "_", " ")
}

// duration writes d as "4 h", "1 d 2 h", "30 min" in the locale's units,
// to its two largest units.
func (l *locale) duration(d time.Duration) string {
	d = d.Round(time.Second)
	units := []struct {
		size   time.Duration
		format string
	}{{24 * time.Hour, l.unitDay}, {time.Hour, l.unitHour}, {time.Minute, l.unitMinute}, {time.Second, l.unitSecond}}
	var parts []string
	for _, u := range units {
		if n := d / u.size; n > 0 || u.size == time.Second && len(parts) == 0 {
			parts = append(parts, fmt.Sprintf(u.format, n))
			d -= n * u.size
		}
		if len(parts) == 2 || len(parts) == 1 && d == 0 {
			break
		}
	}
	return strings.Join(parts, " ")
}

// derivedChange is the one-line change of a derived event: "stalled for
// 4 h" or "no longer stalled (was 6 h)".
func (l *locale) derivedChange(ev *diff.Event) string {
	d := ev.Data.Derived
	word := l.derivedWord(ev.Type)
	if d.Resolved {
		return fmt.Sprintf(l.lineResolved, word, l.duration(d.FiredAt.Sub(d.AnchorAt)))
	}
	return fmt.Sprintf(l.lineDerived, word, l.duration(d.DueAt.Sub(d.AnchorAt)))
}

func (l *locale) statusName(s int) string {
	if s >= 0 && s < len(l.status) {
		return l.status[s]
	}
	return fmt.Sprintf(l.unknownStatus, s)
}
