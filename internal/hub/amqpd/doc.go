// Package amqpd is the local IoT Hub's AMQP 1.0 device endpoint (and the
// service's cloud-to-device endpoint). It is a
// small AMQP 1.0 server written for the hub (no pure-Go AMQP server
// library exists): the subset of the type system that IoT Hub clients
// use, frames and performatives, connection/session/link state with
// flow control, and the security layers the Azure IoT SDKs use. The
// hub's front end terminates TLS (port 5671 or the shared port) or
// WebSocket (/$iothub/websocket, subprotocol AMQPWSB10) and hands each
// connection to [Server.ServeConn].
//
// What the endpoint accepts:
//
//   - Security: the plain AMQP header (no SASL, as the Node and .NET
//     device SDKs send it), or SASL with MSSBCBS, ANONYMOUS (both then
//     authenticate with CBS) or PLAIN ("{id}@sas.{hub}" with a device or
//     module token, "{policy}@sas.root.{hub}" with a hub policy token
//     that has DeviceConnect; one token per connection, the connection is
//     closed when it expires).
//   - CBS on the $cbs node: put-token with either token type
//     (servicebus.windows.net:sastoken, azure-devices.net:sastoken), the
//     audience naming the token's own identity or the hub, answered with
//     status-code and status-description and correlation-id = the
//     request's message-id. A hub audience may be "{host}",
//     "amqps://{host}" or "amqps://{host}:5671/" (.NET service); a hub
//     token of a policy with DeviceConnect opens device links, one with
//     ServiceConnect (or a bearer token) the service nodes only.
//     A put-token on a live connection re-arms the
//     identity's expiry; when a token expires without a refresh, the
//     identity's links are detached with amqp:unauthorized-access.
//   - X.509: a TLS client certificate authenticates method links without
//     CBS.
//   - Method links on /devices/{id}/methods/devicebound and
//     /devices/{id}/modules/{mid}/methods/devicebound (any case, with or
//     without amqps://host[:port]): requests carry a uuid correlation-id,
//     IoThub-methodname and a data section; responses carry the
//     correlation-id and IoThub-status. Several identities may share one
//     connection, each with its own token.
//   - Telemetry links on /devices/{id}[/modules/{mid}]/messages/events,
//     authenticated like the method links: each message goes to the
//     engine (engine.ReceiveEvent); one it refuses is rejected.
//   - Twin links on /devices/{id}[/modules/{mid}]/twin (twins.go), a
//     sender and a receiver, authenticated like the method links and
//     paired by identity (one pair per identity; a newer link steals the
//     older one's place). Requests carry the message annotations
//     operation (GET, PATCH, PUT, DELETE) and resource
//     (/properties/reported, /notifications/twin/properties/desired) and a
//     correlation-id; answers echo the correlation-id with an int status
//     annotation: GET 200 with the twin, PATCH 204 with the new reported
//     version as a long version annotation, PUT/DELETE 200 (desired-patch
//     subscription on/off). Refusals carry the hub's status and the JSON
//     {"message","errorCode","trackingId","details"}. The unit is the
//     engine.DesiredConn: desired patches go on the twin receiver without
//     a correlation-id, annotated resource=/properties/desired and
//     version (long), "$version" in the body. The subscription ends with
//     DELETE or the detach of either twin link.
//   - Cloud-to-device links on /devices/{id}/messages/devicebound
//     (c2d.go; modules are refused with amqp:not-implemented): while the
//     link has credit the hub delivers the engine's queued messages
//     unsettled, with a 16-byte delivery tag, the service's properties,
//     the annotations iothub-enqueuedtime (timestamp),
//     iothub-deliverycount (ubyte) and x-opt-sequence-number (ulong), and
//     the header's delivery-count. accepted completes, rejected rejects,
//     released and modified abandon; in rcv-settle-mode second the hub
//     answers with a settled disposition (rejected
//     com.microsoft:message-lock-lost when the lock is gone). Deliveries
//     unsettled at detach or connection end go back to the queue.
//   - Service nodes (service.go): a sender link on /messages/devicebound
//     (each message's "to" names the device; accepted, or rejected with
//     amqp:not-found, amqp:resource-limit-exceeded,
//     amqp:link:message-size-exceeded, com.microsoft:argument-error) and a
//     receiver link on /messages/servicebound/feedback (feedback batches
//     as JSON, content-type application/vnd.microsoft.iothub.feedback.json,
//     settled like cloud-to-device messages).
//   - Model id: the attach property com.microsoft:model-id on any link
//     the device sends on (the .NET and Java SDKs put it on every one; it
//     is not a connection property) is the twin's modelId.
//
// Failures are AMQP errors: a refused link gets an attach without a
// terminus and a detach carrying amqp:unauthorized-access or
// amqp:not-found, with a description in IoT Hub's JSON style; a malformed
// frame ends that connection with a close carrying amqp:decode-error or
// amqp:connection:framing-error. Closes the engine asks for map to
// conditions too: a newer connection of the identity detaches the old
// links with amqp:link:stolen, a deleted identity with amqp:not-found, a
// hub shutdown closes with amqp:connection:forced. Only an injected
// network fault (engine.DropConnection) drops the socket bare. Connections
// never share state beyond the engine, so one connection's faults do not
// affect others.
//
// Where IoT Hub's documentation and observed behaviour are silent, the
// choices made here are marked "[inf]" in comments.
package amqpd
