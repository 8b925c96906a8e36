// Package sim is an in-process simulator of the incsapp task API
// (GET /external/tasks): a seeded, evolving world of tasks and their history
// logs served over HTTP exactly as the vendor page shows it, with injectable
// faults. Tests, `incs-relay demo` and `incs-relay sim` use it; Logs returns
// every log it ever created and Edits every change it made that leaves no
// log (a task's field or a comment edited, a task deleted): the ground
// truth a relay's events are checked against.
//
// Contract details the vendor page leaves open, chosen here:
//   - page counts from 1; page < 1 is page 1. page_size defaults to 20 and
//     values above 100 are capped at 100, as the real API most likely does;
//     page_size < 1 means the default.
//   - start_at and end_at filter by creation time, both inclusive, as
//     wall-clock times of the simulator's Location compared like a database
//     column without a zone: across a daylight-saving fall-back, a task of
//     the repeated hour's second pass counts as created before one of its
//     first pass. name matches a substring; a malformed parameter is HTTP
//     400 with an error envelope.
//   - a wrong or missing bearer token is HTTP 401 with an error envelope;
//     an empty Options.Token accepts any request.
//   - tasks are listed newest id first unless Options.Order says otherwise;
//     each task's logs are in id order.
package sim
