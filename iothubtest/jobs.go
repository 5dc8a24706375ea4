package iothubtest

import "time"

// AdvanceJobClock moves the hub clock forward by d, without waiting in
// real time; it is [Server.AdvanceClock] under its first name. The hub
// clock is what IoT Hub jobs run on (a job's startTime, its
// maxExecutionTimeInSeconds and the 30-day job history) and also what
// cloud-to-device messages run on: their expiry, the one-minute lock of
// a received message and feedback batching (see [Server.SendC2D]).
// Advancing it expires messages and locks at once.
// Jobs whose startTime has come start at once; running jobs whose
// maxExecutionTimeInSeconds has passed stop, and their devices not done
// yet end "canceled". Direct method calls and their timeouts still run in
// real time. Negative d is ignored.
//
// A test schedules a job an hour ahead, sees it "scheduled", advances the
// clock and sees it run:
//
//	hub := iothubtest.NewServer(t, nil)
//	// ... schedule a job with startTime = now + 1h (PUT /jobs/v2/{id})
//	hub.AdvanceJobClock(time.Hour)
//	// ... poll GET /jobs/v2/{id} until its status is "completed"
//
// The job clock starts at the real time, so startTime values computed
// from time.Now keep their meaning.
func (s *Server) AdvanceJobClock(d time.Duration) { s.h.Engine.AdvanceJobClock(d) }

// AdvanceClock moves the hub clock forward by d (negative d is ignored):
// jobs due by then start or stop, cloud-to-device messages and locks due
// by then expire, and waiting feedback records are batched. Method calls
// and their timeouts still run in real time. It is the same clock as
// AdvanceJobClock's.
func (s *Server) AdvanceClock(d time.Duration) { s.h.Engine.AdvanceJobClock(d) }

// JobClock returns the hub's job clock: the real time plus every
// AdvanceJobClock so far. Compute a job's startTime from it once the
// clock has been advanced.
func (s *Server) JobClock() time.Time { return s.h.Engine.JobClock() }
