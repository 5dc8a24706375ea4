package service

import (
	"encoding/json"
	"time"
)

// jobWire is a job as the jobs API sends it (the official SDKs'
// JobResponse).
type jobWire struct {
	JobID                     string          `json:"jobId"`
	Type                      JobType         `json:"type"`
	Status                    JobStatus       `json:"status"`
	QueryCondition            string          `json:"queryCondition,omitempty"`
	CreatedTime               string          `json:"createdTime,omitempty"`
	StartTime                 string          `json:"startTime,omitempty"`
	EndTime                   string          `json:"endTime,omitempty"`
	MaxExecutionTimeInSeconds int64           `json:"maxExecutionTimeInSeconds,omitempty"`
	CloudToDeviceMethod       *methodWire     `json:"cloudToDeviceMethod,omitempty"`
	UpdateTwin                json.RawMessage `json:"updateTwin,omitempty"`
	FailureReason             string          `json:"failureReason,omitempty"`
	StatusMessage             string          `json:"statusMessage,omitempty"`
	DeviceJobStatistics       *JobStatistics  `json:"deviceJobStatistics,omitempty"`
}

// methodWire is a method as a job echoes it.
type methodWire struct {
	MethodName               string          `json:"methodName"`
	Payload                  json.RawMessage `json:"payload,omitempty"`
	ResponseTimeoutInSeconds int64           `json:"responseTimeoutInSeconds,omitempty"`
	ConnectTimeoutInSeconds  int64           `json:"connectTimeoutInSeconds,omitempty"`
}

// UnmarshalJSON decodes a job from the jobs API's JSON.
func (j *Job) UnmarshalJSON(b []byte) error {
	var w jobWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*j = Job{
		ID:               w.JobID,
		Type:             w.Type,
		Status:           w.Status,
		QueryCondition:   w.QueryCondition,
		CreatedTime:      parseTime(w.CreatedTime),
		StartTime:        parseTime(w.StartTime),
		EndTime:          parseTime(w.EndTime),
		MaxExecutionTime: time.Duration(w.MaxExecutionTimeInSeconds) * time.Second,
		TwinUpdate:       w.UpdateTwin,
		FailureReason:    w.FailureReason,
		StatusMessage:    w.StatusMessage,
	}
	if string(j.TwinUpdate) == "null" {
		j.TwinUpdate = nil
	}
	if w.DeviceJobStatistics != nil {
		j.Statistics = *w.DeviceJobStatistics
	}
	if m := w.CloudToDeviceMethod; m != nil {
		j.Method = &CloudToDeviceMethod{
			MethodName:      m.MethodName,
			ResponseTimeout: time.Duration(m.ResponseTimeoutInSeconds) * time.Second,
			ConnectTimeout:  time.Duration(m.ConnectTimeoutInSeconds) * time.Second,
		}
		if len(m.Payload) > 0 {
			j.Method.Payload = m.Payload
		}
	}
	return nil
}

// MarshalJSON encodes a job as the jobs API does.
func (j Job) MarshalJSON() ([]byte, error) {
	w := jobWire{
		JobID:                     j.ID,
		Type:                      j.Type,
		Status:                    j.Status,
		QueryCondition:            j.QueryCondition,
		CreatedTime:               formatTime(j.CreatedTime),
		StartTime:                 formatTime(j.StartTime),
		EndTime:                   formatTime(j.EndTime),
		MaxExecutionTimeInSeconds: int64(j.MaxExecutionTime / time.Second),
		UpdateTwin:                j.TwinUpdate,
		FailureReason:             j.FailureReason,
		StatusMessage:             j.StatusMessage,
		DeviceJobStatistics:       &j.Statistics,
	}
	if m := j.Method; m != nil {
		payload, err := encodePayload(m.Payload)
		if err != nil {
			return nil, err
		}
		w.CloudToDeviceMethod = &methodWire{
			MethodName:               m.MethodName,
			Payload:                  payload,
			ResponseTimeoutInSeconds: int64(m.ResponseTimeout / time.Second),
			ConnectTimeoutInSeconds:  int64(m.ConnectTimeout / time.Second),
		}
	}
	return json.Marshal(w)
}

// deviceJobWire is a device job as the devices.jobs query returns it.
type deviceJobWire struct {
	DeviceID               string          `json:"deviceId"`
	JobID                  string          `json:"jobId"`
	JobType                JobType         `json:"jobType"`
	Status                 DeviceJobStatus `json:"status"`
	StartTimeUtc           string          `json:"startTimeUtc,omitempty"`
	EndTimeUtc             string          `json:"endTimeUtc,omitempty"`
	CreatedDateTimeUtc     string          `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc string          `json:"lastUpdatedDateTimeUtc,omitempty"`
	Outcome                *struct {
		DeviceMethodResponse *struct {
			Status  int             `json:"status"`
			Payload json.RawMessage `json:"payload"`
		} `json:"deviceMethodResponse"`
	} `json:"outcome,omitempty"`
	Error *DeviceJobError `json:"error,omitempty"`
}

// UnmarshalJSON decodes a device job from the query API's JSON.
func (d *DeviceJob) UnmarshalJSON(b []byte) error {
	var w deviceJobWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*d = DeviceJob{
		DeviceID:        w.DeviceID,
		JobID:           w.JobID,
		JobType:         w.JobType,
		Status:          w.Status,
		StartTime:       parseTime(w.StartTimeUtc),
		EndTime:         parseTime(w.EndTimeUtc),
		CreatedTime:     parseTime(w.CreatedDateTimeUtc),
		LastUpdatedTime: parseTime(w.LastUpdatedDateTimeUtc),
		Error:           w.Error,
	}
	if w.Outcome != nil && w.Outcome.DeviceMethodResponse != nil {
		r := w.Outcome.DeviceMethodResponse
		p := r.Payload
		if len(p) == 0 {
			p = json.RawMessage("null")
		}
		d.MethodResult = &MethodResult{Status: r.Status, Payload: p}
	}
	return nil
}
