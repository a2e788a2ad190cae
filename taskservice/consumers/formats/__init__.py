"""Decoders of the input topic formats: exh, cloudevents and debezium.

Each decoder turns one record into an Event, a Rejection or a Skip; see
`taskservice.consumers.decode.decode_record`, which picks the decoder by the topic's format.
"""
