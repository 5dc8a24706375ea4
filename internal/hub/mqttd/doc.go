// Package mqttd is the local IoT Hub's MQTT 3.1.1 device endpoint. It
// embeds a mochi-mqtt broker without listeners of its own: the hub's front
// end terminates TLS (port 8883) or WebSocket (/$iothub/websocket) and
// hands each connection to [Server.ServeConn].
//
// The endpoint speaks IoT Hub's dialect of MQTT, not general MQTT:
//
//   - CONNECT: protocol level 4 only (MQTT 3.1 and 5 get CONNACK 1);
//     ClientId "{deviceId}" or "{deviceId}/{moduleId}"; username
//     "{host}/{clientId}/?api-version=…" (or the legacy form without "?")
//     naming the hub and the ClientId; password = SAS token, or no
//     password and a TLS client certificate (X.509). Credential failures
//     get CONNACK 5. A model-id parameter in the username (api-version
//     2020-09-30 or later) becomes the twin's modelId.
//   - SUBSCRIBE: only IoT Hub's documented device filters; anything else
//     closes the connection. QoS 2 is granted as QoS 1.
//   - PUBLISH from the device: method responses, twin requests and the
//     identity's own telemetry topic, whose property bag becomes the
//     message's system and application properties
//     ([engine.Engine.ReceiveEvent]; a QoS 1 message is acknowledged only
//     once the engine accepted it). QoS 2, any other topic (every other
//     topic under $iothub/twin/ included), a malformed property bag or a
//     message over 256 KB closes the connection.
//   - Twins: $iothub/twin/GET/?$rid={rid} is answered on
//     $iothub/twin/res/200/?$rid={rid} with
//     {"desired":{…},"reported":{…}}; a reported patch on
//     $iothub/twin/PATCH/properties/reported/?$rid={rid} with
//     $iothub/twin/res/204/?$rid={rid}&$version={v} and an empty body;
//     a refusal with $iothub/twin/res/{status}/?$rid={rid} and the JSON
//     {"message","errorCode","trackingId","details"}. Answers go only to
//     a device subscribed to $iothub/twin/res/#; a request without $rid
//     is dropped unprocessed, and the connection stays up [inf]. A
//     device subscribed to $iothub/twin/PATCH/properties/desired/#
//     receives each desired change on
//     $iothub/twin/PATCH/properties/desired/?$version={v}, in version
//     order, behind the SUBACK. Every twin message the hub sends is QoS 0.
//   - Cloud-to-device messages: a device subscribed to
//     devices/{deviceId}/messages/devicebound/# receives its queue on
//     devices/{deviceId}/messages/devicebound/{property bag}
//     ([FormatC2DTopic]) at the granted QoS, at most five unacknowledged
//     at a time [inf]; a PUBACK completes a message, the end of the
//     connection or an UNSUBSCRIBE returns the unacknowledged ones to the
//     queue (c2d.go).
//   - Method requests go to exactly one connection, at QoS 0, on
//     $iothub/methods/POST/{name}/?$rid={rid}. Messages are never fanned
//     out between devices.
//
// Where IoT Hub's documentation and observed behaviour are silent, the
// choices made here are marked "[inf]" in comments.
package mqttd
