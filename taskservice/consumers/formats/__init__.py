"""Decoders of the input topic formats: exh and cloudevents.

Each decoder turns one record into an Event or a Rejection; see
`taskservice.consumers.decode.decode_record`, which picks the decoder by the topic's format.
"""
