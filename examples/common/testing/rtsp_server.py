#!/usr/bin/python3
"""A test RTSP server: a looping video served as H.264 on 127.0.0.1, with a stall switch.

    python3 rtsp_server.py --port 8554                 # rtsp://127.0.0.1:8554/test, 30 fps
    python3 rtsp_server.py --port 0 --fps 60 --key-int 30 --pattern ball

Prints one line `READY rtsp://127.0.0.1:PORT/MOUNT` on stdout once it accepts connections
(with --port 0 the kernel picks the port and the line names it), so a test waits for that line
instead of sleeping. Signals:

    SIGUSR1  stop sending frames, keep every connection open (a stalled camera)
    SIGUSR2  send frames again
    SIGHUP   close every client's connection, keep serving (a server-side disconnect: the
             clients see the connection closed and reconnect at once; prints KICKED N)
    SIGWINCH make the next frame a key frame (an IDR, whatever --key-int says; prints KEYFRAME
             once the encoder has been asked, KEYFRAME NONE when no media is playing): with a
             long --key-int, a test joins the stream mid-GOP, then ends the GOP when it wants
    SIGTERM  exit cleanly (also SIGINT); tests SIGKILL it to kill it mid-stream

How it works: a producer pipeline decodes the file in a loop (segment seeks, so its running
time never jumps back), converts it to the requested rate with videorate and hands each raw
frame, in real time (appsink sync=true), to the appsrc of the RTSP media:

    producer:  filesrc ! decodebin ! videoconvert ! videoscale ! videorate
                 ! video/x-raw,format=I420,framerate=FPS/1 ! appsink sync=true
    media:     appsrc is-live=true ! x264enc tune=zerolatency speed-preset=ultrafast
                 key-int-max=GOP ! rtph264pay config-interval=-1

The media is shared (one encoder for every client, so reconnecting is cheap). Each frame is
stamped with the moment it was due in the producer (a regular 1/fps grid on the system clock),
like a camera stamps a frame at capture on its own clock, so the RTP timestamps are the
camera's even when a busy CPU pushes a frame late, and a pause leaves a gap in them instead of
a backlog: paused frames are dropped here, never queued. Every new media starts with a key
frame, and a pause keeps the encoder's references, so resumed frames decode at once.
"""

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, Gst, GstRtspServer, GstVideo  # noqa: E402

DEFAULT_VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=8554, help="TCP port; 0 picks a free one")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on")
    p.add_argument("--mount", default="/test", help="mount point (starts with /)")
    p.add_argument("--fps", type=int, default=30, help="frames per second sent")
    p.add_argument("--key-int", type=int, default=30, help="frames per GOP (key-frame interval)")
    p.add_argument("--file", default=DEFAULT_VIDEO, help="video file looped as the source")
    p.add_argument("--pattern", default=None,
                   help="serve videotestsrc with this pattern (e.g. ball, smpte) instead of a file")
    p.add_argument("--width", type=int, default=0, help="scale to this width (0: native)")
    p.add_argument("--height", type=int, default=0, help="scale to this height (0: native)")
    p.add_argument("--bitrate", type=int, default=2000, help="H.264 bitrate in kbit/s")
    args = p.parse_args()
    if not args.mount.startswith("/"):
        p.error("--mount must start with /")
    if args.fps <= 0 or args.key_int <= 0:
        p.error("--fps and --key-int must be above 0")
    if args.pattern is None and not os.path.isfile(args.file):
        p.error(f"--file {args.file!r}: no such file (or use --pattern)")
    return args


def fail(message):
    print(f"rtsp_server.py: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


class Server:
    def __init__(self, args):
        self.args = args
        self.paused = False
        self.appsrc = None     # the current shared media's appsrc, None while no client
        self.encoder = None    # the current shared media's encoder, None while no client
        self.caps = None       # the producer's raw caps, given to every new appsrc
        self.loop = GLib.MainLoop()
        self.producer = self.make_producer()
        self.rtsp = self.make_rtsp_server()

    # -- the producer: raw frames in real time, looping forever --------------------------
    def make_producer(self):
        a = self.args
        size = ""
        if a.width > 0:
            size += f",width={a.width}"
        if a.height > 0:
            size += f",height={a.height}"
        if a.pattern is not None:
            source = f"videotestsrc is-live=true pattern={a.pattern}"
        else:
            source = "filesrc name=file ! decodebin"
        desc = (f"{source} ! videoconvert ! videoscale ! videorate"
                f" ! video/x-raw,format=I420,framerate={a.fps}/1{size}"
                " ! appsink name=raw sync=true max-buffers=1 drop=true emit-signals=true")
        pipeline = Gst.parse_launch(desc)
        if a.pattern is None:
            pipeline.get_by_name("file").set_property("location", a.file)
        pipeline.get_by_name("raw").connect("new-sample", self.on_raw_sample)
        bus = pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_producer_message)
        return pipeline

    def start_producer(self):
        if self.producer.set_state(Gst.State.PAUSED) == Gst.StateChangeReturn.FAILURE:
            fail("the producer pipeline does not start")
        ok, _, _ = self.producer.get_state(10 * Gst.SECOND)
        if ok == Gst.StateChangeReturn.FAILURE:
            fail("the producer pipeline does not preroll (is the file a video?)")
        if self.args.pattern is None:
            # A segment seek: the file's end posts SEGMENT_DONE instead of EOS, and the next
            # (non-flushing) segment seek continues the running time where it was.
            self.producer.seek(1.0, Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT,
                               Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
        self.producer.set_state(Gst.State.PLAYING)

    def on_producer_message(self, _bus, msg):
        if msg.type == Gst.MessageType.SEGMENT_DONE:
            self.producer.seek(1.0, Gst.Format.TIME, Gst.SeekFlags.SEGMENT,
                               Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
        elif msg.type == Gst.MessageType.ERROR:
            err, _ = msg.parse_error()
            fail(f"producer: {msg.src.get_name()}: {err.message}")
        elif msg.type == Gst.MessageType.EOS:
            fail("producer: unexpected end of stream")

    def on_raw_sample(self, sink):
        # The producer's streaming thread, once per frame at the output rate.
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.EOS
        self.caps = sample.get_caps()
        appsrc = self.appsrc
        if appsrc is None or self.paused:
            return Gst.FlowReturn.OK  # nobody watching, or stalled: the frame is dropped
        if appsrc.current_state != Gst.State.PLAYING:
            return Gst.FlowReturn.OK  # no base time yet (a live media plays without data)
        # The camera's timestamp: the moment the frame was due in the producer (a regular
        # 1/fps grid), on the media's running time. Both pipelines run on the system clock, so
        # clock time = base time + running time in either. A late push (a busy CPU) does not
        # move the stamp, as a camera's sensor clock is not moved by its network.
        src = sample.get_buffer()
        running = sample.get_segment().to_running_time(Gst.Format.TIME, src.pts)
        if running == Gst.CLOCK_TIME_NONE:
            return Gst.FlowReturn.OK
        pts = self.producer.get_base_time() + running - appsrc.get_base_time()
        if pts < 0:
            return Gst.FlowReturn.OK  # due before this media started
        if appsrc.get_property("caps") is None:
            appsrc.set_property("caps", self.caps)
        buf = src.copy()
        buf.pts = pts
        buf.dts = Gst.CLOCK_TIME_NONE
        buf.duration = Gst.SECOND // self.args.fps
        appsrc.emit("push-buffer", buf)
        return Gst.FlowReturn.OK

    # -- the RTSP server -----------------------------------------------------------------
    def make_rtsp_server(self):
        a = self.args
        server = GstRtspServer.RTSPServer()
        server.set_address(a.address)
        server.set_service(str(a.port))
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            "( appsrc name=src is-live=true format=time"
            " ! queue max-size-buffers=2 leaky=downstream ! videoconvert"
            f" ! x264enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max={a.key_int}"
            f" bitrate={a.bitrate} threads=1"
            " ! video/x-h264,profile=constrained-baseline"
            " ! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        factory.set_shared(True)
        factory.connect("media-configure", self.on_media_configure)
        server.get_mount_points().add_factory(a.mount, factory)
        return server

    def on_media_configure(self, _factory, media):
        appsrc = media.get_element().get_by_name("src")
        if self.caps is not None:
            appsrc.set_property("caps", self.caps)
        media.connect("unprepared", self.on_media_unprepared, appsrc)
        self.appsrc = appsrc
        self.encoder = media.get_element().get_by_name("enc")

    def on_media_unprepared(self, _media, appsrc):
        if self.appsrc is appsrc:
            self.appsrc = None
            self.encoder = None

    # -- signals -------------------------------------------------------------------------
    def on_signal(self, signum):
        if signum == signal.SIGUSR1:
            self.paused = True
            print("PAUSED", flush=True)
        elif signum == signal.SIGUSR2:
            self.paused = False
            print("RESUMED", flush=True)
        elif signum == signal.SIGHUP:
            kicked = []

            def remove(_server, client):
                kicked.append(client)
                return GstRtspServer.RTSPFilterResult.REMOVE

            self.rtsp.client_filter(remove)
            print(f"KICKED {len(kicked)}", flush=True)
        elif signum == signal.SIGWINCH:
            encoder = self.encoder
            if encoder is None:
                print("KEYFRAME NONE", flush=True)
            else:
                # An upstream force-key-unit event on the encoder's source pad: its next frame
                # is encoded as an IDR (rtph264pay sends SPS/PPS with it, config-interval=-1).
                event = GstVideo.video_event_new_upstream_force_key_unit(
                    Gst.CLOCK_TIME_NONE, True, 0)
                encoder.get_static_pad("src").send_event(event)
                print("KEYFRAME", flush=True)
        else:
            self.loop.quit()
        return GLib.SOURCE_CONTINUE

    def run(self):
        for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGWINCH,
                       signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, self.on_signal, signum)
        self.start_producer()
        if self.rtsp.attach(None) == 0:
            fail(f"cannot listen on {self.args.address}:{self.args.port}")
        port = self.rtsp.get_bound_port()
        print(f"READY rtsp://{self.args.address}:{port}{self.args.mount}", flush=True)
        self.loop.run()
        self.producer.set_state(Gst.State.NULL)


def main():
    args = parse_args()
    Gst.init(None)
    Server(args).run()


if __name__ == "__main__":
    main()
