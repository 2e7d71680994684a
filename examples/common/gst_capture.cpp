// examples/common/gst_capture.cpp - see gst_capture.hpp.
#include "common/gst_capture.hpp"
#include "common/uri_scheme.hpp"

#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gst/video/video.h>

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstring>
#include <mutex>
#include <string_view>
#include <utility>

namespace framepipe_examples {

namespace {

using namespace std::chrono_literals;
using std::chrono::nanoseconds;
using std::chrono::steady_clock;

// The longest a blocking GStreamer call waits before the stop token is looked at again.
constexpr nanoseconds slice = 50ms;

// gst_init once per process. gst_init_check rather than gst_init: a broken installation is a
// one-line error from open(), not an abort.
const std::string& gst_init_error() {
    static std::once_flag once;
    static std::string error;
    std::call_once(once, [] {
        GError* err = nullptr;
        if (gst_init_check(nullptr, nullptr, &err) == FALSE) {
            error = std::string("GStreamer does not initialise: ") +
                    (err != nullptr ? err->message : "unknown error");
        }
        if (err != nullptr) {
            g_error_free(err);
        }
    });
    return error;
}

std::string one_line(std::string s) {
    std::replace(s.begin(), s.end(), '\n', ' ');
    while (!s.empty() && (s.back() == ' ' || s.back() == '.')) {
        s.pop_back();
    }
    return s;
}

std::string ms_text(nanoseconds d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

// "element: message (detail)" from an ERROR or WARNING message. The detail is the debug
// string without its source-location first line ("gstrtspsrc.c(6540): ...: /GstPipeline:...").
std::string describe_message(GstMessage* msg) {
    GError* err = nullptr;
    gchar* debug = nullptr;
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
        gst_message_parse_error(msg, &err, &debug);
    } else {
        gst_message_parse_warning(msg, &err, &debug);
    }
    std::string text = GST_MESSAGE_SRC_NAME(msg) != nullptr ? GST_MESSAGE_SRC_NAME(msg) : "?";
    text += ": ";
    text += err != nullptr ? err->message : "unknown error";
    if (debug != nullptr) {
        std::string detail = debug;
        if (const auto nl = detail.find('\n'); nl != std::string::npos) {
            detail.erase(0, nl + 1);
        } else if (detail.find("): ") != std::string::npos) {
            detail.clear(); // a location alone
        }
        detail = one_line(detail);
        if (!detail.empty()) {
            text = one_line(text) + " (" + detail + ")";
        }
    }
    if (err != nullptr) {
        g_error_free(err);
    }
    g_free(debug);
    return one_line(text);
}

// -- the source, from the options -------------------------------------------------------------

enum class source_kind { rtsp, http, file, camera };

struct source_spec {
    source_kind kind = source_kind::file;
    std::string location; // the URI, the file's path or the device
    std::string error;    // bad options
};

source_spec classify(const gst_capture_options& o) {
    source_spec s;
    if (o.camera >= 0) {
        s.kind = source_kind::camera;
        s.location = "/dev/video" + std::to_string(o.camera);
        return s;
    }
    // Schemes in any case (RFC 3986 3.1); the elements get the URI with its scheme in lower
    // case, the form they compare against.
    const std::string& uri = o.uri;
    if (uri.empty()) {
        s.error = "no URI, path or camera given";
    } else if (has_scheme_prefix(uri, "rtsp://") || has_scheme_prefix(uri, "rtsps://") ||
               has_scheme_prefix(uri, "rtspt://")) {
        s.kind = source_kind::rtsp;
        s.location = with_lower_case_scheme(uri);
        if (o.rtsp_transport != "tcp" && o.rtsp_transport != "udp") {
            s.error = "rtsp_transport '" + o.rtsp_transport + "': must be tcp or udp";
        } else if (o.latency < 0ms || o.latency > std::chrono::milliseconds(INT_MAX)) {
            s.error = "latency: must be 0 ms or more";
        }
    } else if (has_scheme_prefix(uri, "http://") || has_scheme_prefix(uri, "https://")) {
        s.kind = source_kind::http;
        s.location = with_lower_case_scheme(uri);
    } else if (has_scheme_prefix(uri, "v4l2://")) {
        s.kind = source_kind::camera;
        s.location = uri.substr(std::strlen("v4l2://"));
        if (s.location.empty()) {
            s.error = "'" + uri + "': no device (v4l2:///dev/videoN)";
        }
    } else if (has_scheme_prefix(uri, "file://")) {
        s.kind = source_kind::file;
        GError* err = nullptr;
        gchar* path = g_filename_from_uri(with_lower_case_scheme(uri).c_str(), nullptr, &err);
        if (path != nullptr) {
            s.location = path;
            g_free(path);
        } else {
            s.error = "'" + uri + "': " + (err != nullptr ? err->message : "not a file URI");
        }
        if (err != nullptr) {
            g_error_free(err);
        }
    } else if (uri.find("://") != std::string::npos) {
        s.error = "'" + uri + "': unsupported scheme (rtsp, http, https, file, v4l2)";
    } else {
        s.kind = source_kind::file;
        s.location = uri;
    }
    return s;
}

// The pipeline for gst_parse_launch. With `value` the user's string is written in (quoted) for
// display; without it, the source element is left unconfigured and open() sets the property,
// so no URI or path can break the syntax.
std::string pipeline_text(const gst_capture_options& o, const source_spec& s,
                          const std::string* value) {
    auto quoted = [&](const char* property) {
        if (value == nullptr) {
            return std::string();
        }
        gchar* escaped = g_strescape(value->c_str(), nullptr);
        std::string r = std::string(" ") + property + "=\"" + escaped + "\"";
        g_free(escaped);
        return r;
    };
    std::string text;
    bool live = true;
    switch (s.kind) {
    case source_kind::rtsp:
        // protocols: TCP interleaving by default (see the header); latency + drop-on-latency
        // bound the jitterbuffer so that it never holds a backlog.
        text = "rtspsrc name=rtspsrc" + quoted("location") + " protocols=" + o.rtsp_transport +
               " latency=" + std::to_string(o.latency.count()) +
               " drop-on-latency=" + (o.drop_on_latency ? "true" : "false");
        break;
    case source_kind::http:
        // is-live: a camera's stream, not a download; do-timestamp: arrival time as PTS (MJPEG
        // over HTTP has no timestamps of its own). multipartdemux outside decodebin, with
        // single-stream: inside, decodebin waits for a no-more-pads that multipartdemux never
        // sends on its own, and no frame ever comes out (measured).
        text = "souphttpsrc name=souphttpsrc" + quoted("location") +
               " is-live=true do-timestamp=true ! multipartdemux name=multipartdemux"
               " single-stream=true";
        break;
    case source_kind::file:
        text = "filesrc name=filesrc" + quoted("location");
        live = false;
        break;
    case source_kind::camera:
        text = "v4l2src name=v4l2src" + quoted("device");
        break;
    }
    // decodebin: stop at raw video in system memory (a stream of another kind stays unlinked).
    text += " ! decodebin name=decodebin caps=video/x-raw"
            " ! videoconvert name=videoconvert ! video/x-raw,format=BGR"
            " ! appsink name=appsink max-buffers=1 enable-last-sample=false emit-signals=false";
    if (live) {
        text += " drop=true sync=false"; // the newest frame; the reader never paces a camera
    } else if (o.realtime) {
        text += " drop=true sync=true"; // the file's own rate, like a camera
    } else {
        text += " drop=false sync=false"; // every frame; the reader paces
    }
    return text;
}

// -- frames that keep their GstSample ---------------------------------------------------------

// A cv::Mat over a mapped GstBuffer: the UMatData's userdata is the mapping, and this allocator
// unmaps it and drops the sample when the Mat's reference count reaches zero. Only
// UMatData::currAllocator points here (Mat::allocator stays null), so create() on such a Mat
// allocates from OpenCV's default allocator as usual.
struct mapped_sample {
    GstSample* sample = nullptr;
    GstVideoFrame frame{};
};

class sample_allocator final : public cv::MatAllocator {
public:
    cv::UMatData* allocate(int, const int*, int, void*, std::size_t*, cv::AccessFlag,
                           cv::UMatUsageFlags) const override {
        return nullptr; // never asked: Mat::allocator is never set to this allocator
    }
    bool allocate(cv::UMatData*, cv::AccessFlag, cv::UMatUsageFlags) const override {
        return false;
    }
    void deallocate(cv::UMatData* u) const override {
        if (u == nullptr) {
            return;
        }
        auto* m = static_cast<mapped_sample*>(u->userdata);
        gst_video_frame_unmap(&m->frame);
        gst_sample_unref(m->sample);
        delete m;
        delete u;
    }
};

const sample_allocator& the_sample_allocator() {
    static const sample_allocator a;
    return a;
}

} // namespace

// -- the capture -------------------------------------------------------------------------------

struct gst_capture::impl {
    explicit impl(gst_capture_options o) : options(std::move(o)) {}

    gst_capture_options options;
    source_spec source;
    GstElement* pipeline = nullptr;
    GstElement* appsink = nullptr;
    GstBus* bus = nullptr;
    GstSample* pending = nullptr; // the first frame, pulled by open()
    std::uint64_t index = 0;
    bool live = true;
    bool map_clock = false;       // captured from the PTS (else: the moment read() took it)

    // captured = steady_at_sync + (clock_time - clock_at_sync), clock_time = running + base.
    GstClockTime base_time = 0;
    GstClockTime clock_at_sync = 0;
    steady_clock::time_point steady_at_sync;

    GstCaps* info_caps = nullptr; // the caps `info` was parsed from (a reference)
    GstVideoInfo info{};

    // Written by the decoder-input probe (a streaming thread), read by read().
    std::mutex keys_mu;
    std::array<GstClockTime, 64> key_pts{}; // the PTS of the latest key units, a ring
    std::size_t key_next = 0;
    std::atomic<bool> seen_key{false};
    std::atomic<bool> has_decoder{false};
    std::atomic<bool> video_selected{false};
    // This connection's accounting, kept through close() and reset when open() starts the next
    // connection (so that a failed open's figures can still be read after it).
    std::atomic<std::uint64_t> dropped_before_key{0}; // encoded units dropped before decoding

    // Frames dropped by the appsink (see dropped_before_read()). The appsink's input probe
    // numbers each arriving buffer (1, 2, ...) and keeps the latest numbers by buffer; a sample
    // taken from the appsink is looked up there: when it is arrival k and `taken` samples have
    // been taken with it, the k - taken arrivals before it that nobody took were dropped (the
    // appsink drops the oldest). At close() every arrival read() did not return was dropped.
    std::mutex arrivals_mu;
    std::array<std::pair<const GstBuffer*, std::uint64_t>, 16> recent_arrivals{};
    std::size_t recent_next = 0;
    std::atomic<std::uint64_t> arrived{0}; // written under arrivals_mu
    // The reading thread's. `dropped` is stored before `taken` (release), so that a reader of
    // `taken` (acquire) sees a `dropped` at least as new, and an `arrived` at least `taken`.
    std::atomic<std::uint64_t> taken{0};   // samples taken from the appsink (open() and read())
    std::atomic<std::uint64_t> dropped{0}; // arrivals known to be dropped
    std::uint64_t last_taken_arrival = 0;  // the arrival number of the latest sample taken
    std::uint64_t delivered = 0;           // samples read() returned as frames
    // Samples read() took and could not convert (to_frame() failed: read() said error): dropped
    // for that reason, never delivered. Written by the reading thread; any thread reads it.
    std::atomic<std::uint64_t> unconvertible{0};
    std::uint64_t fail_conversions = 0; // fail_next_conversions_for_testing()

    // HTTP MJPEG: the bytes multipartdemux was given since it last put out a part, and the most
    // it held of one part in this connection (a part put out, or what it held of an unfinished
    // one when the next buffer came). A part without Content-Length ends at the next boundary
    // only, and the demuxer keeps it whole until then: a part past options.max_part_bytes fails
    // the stream (see on_demux_input). Written by the source's streaming thread (the demuxer
    // pushes its parts from its chain function, on that same thread), read by any thread.
    std::atomic<std::uint64_t> part_bytes{0};
    std::atomic<std::uint64_t> largest_part{0};
    std::atomic<bool> part_overflow{false};
    GstElement* demux = nullptr; // multipartdemux (a reference), for the error it posts

    // -- streaming-thread callbacks ------------------------------------------------------------

    // multipartdemux's input: counts the bytes of the part being assembled. Once they are past
    // max_part_bytes, the buffer is dropped, and so is every later one (the demuxer then holds no
    // more than the cap and one buffer), and an error naming the cap is posted on the bus once:
    // read() (or open()) returns it, and a live source reconnects.
    static GstPadProbeReturn on_demux_input(GstPad*, GstPadProbeInfo* info, gpointer self_) {
        auto* self = static_cast<impl*>(self_);
        std::uint64_t size = 0;
        if ((GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) != 0) {
            size = gst_buffer_get_size(GST_PAD_PROBE_INFO_BUFFER(info));
        } else if ((GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER_LIST) != 0) {
            GstBufferList* list = GST_PAD_PROBE_INFO_BUFFER_LIST(info);
            for (guint i = 0, n = gst_buffer_list_length(list); i < n; ++i) {
                size += gst_buffer_get_size(gst_buffer_list_get(list, i));
            }
        }
        if (self->part_overflow.load(std::memory_order_relaxed)) {
            return GST_PAD_PROBE_DROP;
        }
        const auto cap = static_cast<std::uint64_t>(self->options.max_part_bytes);
        // What the demuxer holds of its unfinished part before this buffer: the bytes given it
        // since it last put a part out. Checked before this buffer is added, since a buffer may
        // hold whole parts that the demuxer puts out as it takes it (each resets the count):
        // the figure is within one buffer of the truth, and so is the cap.
        const auto held = self->part_bytes.load(std::memory_order_relaxed);
        if (cap > 0 && held > cap) {
            self->part_overflow.store(true, std::memory_order_relaxed);
            const std::string text = "an HTTP MJPEG part of more than " + std::to_string(cap) +
                                     " bytes without its end (max_part_bytes)";
            GError* err = g_error_new_literal(GST_STREAM_ERROR, GST_STREAM_ERROR_DEMUX,
                                              text.c_str());
            gst_element_post_message(
                self->demux,
                gst_message_new_error(GST_OBJECT(self->demux), err,
                                      "no boundary came within max_part_bytes of the last part"));
            g_error_free(err);
            return GST_PAD_PROBE_DROP;
        }
        self->note_part(held);
        self->part_bytes.store(held + size, std::memory_order_relaxed);
        return GST_PAD_PROBE_OK;
    }
    // A part out of the demuxer (its size is exact): the next one starts from 0.
    static GstPadProbeReturn on_demux_output(GstPad*, GstPadProbeInfo* info, gpointer self_) {
        auto* self = static_cast<impl*>(self_);
        self->part_bytes.store(0, std::memory_order_relaxed);
        if ((GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) != 0) {
            self->note_part(gst_buffer_get_size(GST_PAD_PROBE_INFO_BUFFER(info)));
        }
        return GST_PAD_PROBE_OK;
    }
    // Keeps `bytes` in largest_part if it is the most yet. The streaming thread.
    void note_part(std::uint64_t bytes) noexcept {
        if (bytes > largest_part.load(std::memory_order_relaxed)) {
            largest_part.store(bytes, std::memory_order_relaxed);
        }
    }
    static void on_demux_pad_added(GstElement*, GstPad* pad, gpointer self_) {
        if (GST_PAD_IS_SRC(pad)) {
            gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, &impl::on_demux_output, self_,
                              nullptr);
        }
    }

    // rtspsrc: set up the first video stream only.
    static gboolean on_select_stream(GstElement*, guint, GstCaps* caps, gpointer self_) {
        auto* self = static_cast<impl*>(self_);
        const GstStructure* s = gst_caps_get_structure(caps, 0);
        const gchar* media = s != nullptr ? gst_structure_get_string(s, "media") : nullptr;
        if (media == nullptr || std::strcmp(media, "video") != 0) {
            return FALSE;
        }
        return self->video_selected.exchange(true) ? FALSE : TRUE;
    }

    // Any element added anywhere in the pipeline: a video (or image) decoder gets the probe;
    // an H.264/H.265 parser is told to put the parameter sets in front of every key unit.
    static void on_element_added(GstBin*, GstBin*, GstElement* element, gpointer self_) {
        if (GstElementFactory* factory = gst_element_get_factory(element); factory != nullptr) {
            const gchar* name = gst_plugin_feature_get_name(GST_PLUGIN_FEATURE(factory));
            if (name != nullptr &&
                (std::strcmp(name, "h264parse") == 0 || std::strcmp(name, "h265parse") == 0)) {
                // config-interval=-1: SPS/PPS (and VPS) with every IDR. The probe below drops
                // every delta unit before the first key unit, and with key_frames_only every
                // one, including the one a parser puts the parameter sets it has seen in front
                // of (measured: joining mid-GOP, h264parse sends SPS/PPS with the first unit it
                // forwards, a P-slice, flagged HEADER|DELTA_UNIT); so each key unit must carry
                // them itself, whatever the sender does.
                g_object_set(element, "config-interval", -1, nullptr);
            }
        }
        const gchar* klass = gst_element_get_metadata(element, GST_ELEMENT_METADATA_KLASS);
        if (klass == nullptr || std::strstr(klass, "Decoder") == nullptr ||
            (std::strstr(klass, "Video") == nullptr && std::strstr(klass, "Image") == nullptr)) {
            return;
        }
        GstPad* pad = gst_element_get_static_pad(element, "sink");
        if (pad == nullptr) {
            return;
        }
        static_cast<impl*>(self_)->has_decoder = true;
        gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, &impl::on_decoder_input, self_, nullptr);
        gst_object_unref(pad);
    }

    // The decoder's input: record key units, drop what must not be decoded.
    static GstPadProbeReturn on_decoder_input(GstPad*, GstPadProbeInfo* info, gpointer self_) {
        auto* self = static_cast<impl*>(self_);
        GstBuffer* buffer = GST_PAD_PROBE_INFO_BUFFER(info);
        if (buffer == nullptr) {
            return GST_PAD_PROBE_OK;
        }
        // The DELTA_UNIT flag alone decides, HEADER or not: a key unit may carry the HEADER
        // flag (h264parse marks an IDR with inline SPS/PPS so), and so may a delta unit (the
        // P-slice a parser puts the parameter sets in front of when a stream is joined mid-GOP:
        // decoded, it is a grey smear, and it is no key frame). Parameter sets still reach the
        // decoder: with every key unit (on_element_added) or in the caps' codec_data.
        if (!GST_BUFFER_FLAG_IS_SET(buffer, GST_BUFFER_FLAG_DELTA_UNIT)) {
            self->seen_key = true;
            const std::lock_guard<std::mutex> lock(self->keys_mu);
            self->key_pts[self->key_next] = GST_BUFFER_PTS(buffer);
            self->key_next = (self->key_next + 1) % self->key_pts.size();
            return GST_PAD_PROBE_OK;
        }
        if (!self->seen_key.load() || self->options.key_frames_only) {
            self->dropped_before_key.fetch_add(1);
            return GST_PAD_PROBE_DROP;
        }
        return GST_PAD_PROBE_OK;
    }

    // The appsink's input: every decoded frame that reaches it (it may drop it before read()).
    void arrival(const GstBuffer* buffer) {
        const std::lock_guard<std::mutex> lock(arrivals_mu);
        const auto n = arrived.load(std::memory_order_relaxed) + 1;
        recent_arrivals[recent_next] = {buffer, n};
        recent_next = (recent_next + 1) % recent_arrivals.size();
        arrived.store(n, std::memory_order_relaxed);
    }
    static GstPadProbeReturn on_appsink_input(GstPad*, GstPadProbeInfo* info, gpointer self_) {
        auto* self = static_cast<impl*>(self_);
        if ((GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) != 0) {
            self->arrival(GST_PAD_PROBE_INFO_BUFFER(info));
        } else if ((GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER_LIST) != 0) {
            GstBufferList* list = GST_PAD_PROBE_INFO_BUFFER_LIST(info);
            for (guint i = 0, n = gst_buffer_list_length(list); i < n; ++i) {
                self->arrival(gst_buffer_list_get(list, i));
            }
        }
        return GST_PAD_PROBE_OK;
    }

    // -- the reading thread --------------------------------------------------------------------

    // A sample taken from the appsink: the arrivals before it that were not taken were dropped.
    GstSample* take(GstSample* sample) {
        const GstBuffer* buffer = gst_sample_get_buffer(sample);
        std::uint64_t k = last_taken_arrival + 1; // (not found: nothing dropped, as far as known)
        {
            const std::lock_guard<std::mutex> lock(arrivals_mu);
            // Newest first: a buffer's memory may be reused for a later one, never while the
            // earlier one is still held (as this one is).
            for (std::size_t i = 1; i <= recent_arrivals.size(); ++i) {
                const auto& [b, n] =
                    recent_arrivals[(recent_next + recent_arrivals.size() - i) % recent_arrivals.size()];
                if (b == buffer && n > last_taken_arrival) {
                    k = n;
                    break;
                }
            }
        }
        last_taken_arrival = k;
        const auto t = taken.load(std::memory_order_relaxed) + 1;
        dropped.store(std::max(dropped.load(std::memory_order_relaxed), k - std::min(k, t)),
                      std::memory_order_relaxed);
        taken.store(t, std::memory_order_release);
        return sample;
    }

    // A sample read() took, converted into `out`: counted as delivered when it became a frame,
    // as unconvertible (and dropped) when it did not. The status read() returns.
    status deliver(GstSample* sample, gst_frame& out, std::string& error) {
        if (!to_frame(sample, out, error)) {
            unconvertible.fetch_add(1, std::memory_order_relaxed);
            return status::error;
        }
        ++delivered;
        return status::frame;
    }

    bool is_key(GstClockTime pts) {
        if (!has_decoder.load()) {
            return true; // raw video: every frame stands alone
        }
        if (!GST_CLOCK_TIME_IS_VALID(pts)) {
            return false;
        }
        const std::lock_guard<std::mutex> lock(keys_mu);
        return std::find(key_pts.begin(), key_pts.end(), pts) != key_pts.end();
    }

    // The first ERROR on the bus, as one line ("" if none). Pops (and drops) every other
    // message, so the bus never grows while frames are read; keeps the last warning.
    std::string bus_error(bool* eos = nullptr) {
        while (GstMessage* msg = gst_bus_pop_filtered(
                   bus, static_cast<GstMessageType>(GST_MESSAGE_ERROR | GST_MESSAGE_WARNING |
                                                    GST_MESSAGE_EOS))) {
            const auto type = GST_MESSAGE_TYPE(msg);
            std::string text;
            if (type == GST_MESSAGE_ERROR) {
                text = describe_message(msg);
            } else if (type == GST_MESSAGE_WARNING) {
                last_warning = describe_message(msg);
            } else if (eos != nullptr) {
                *eos = true;
            }
            gst_message_unref(msg);
            if (!text.empty()) {
                return text;
            }
        }
        return {};
    }
    std::string last_warning;

    // Reads the pipeline's clock and base time with steady_clock, once per connection.
    void sync_clocks() {
        map_clock = false;
        GstClock* clock = gst_element_get_clock(pipeline);
        if (clock == nullptr) {
            return;
        }
        base_time = gst_element_get_base_time(pipeline);
        // Three tries; the one read in the shortest window, stamped at its midpoint.
        auto best = nanoseconds::max();
        for (int i = 0; i < 3; ++i) {
            const auto before = steady_clock::now();
            const GstClockTime c = gst_clock_get_time(clock);
            const auto after = steady_clock::now();
            if (after - before < best) {
                best = after - before;
                clock_at_sync = c;
                steady_at_sync = before + (after - before) / 2;
            }
        }
        gst_object_unref(clock);
        map_clock = GST_CLOCK_TIME_IS_VALID(clock_at_sync) &&
                    (live || options.realtime); // a file read at the reader's pace has no clock
    }

    steady_clock::time_point captured(GstSample* sample, GstClockTime pts, steady_clock::time_point now) const {
        if (!map_clock || !GST_CLOCK_TIME_IS_VALID(pts)) {
            return now;
        }
        const GstSegment* segment = gst_sample_get_segment(sample);
        if (segment == nullptr || segment->format != GST_FORMAT_TIME) {
            return now;
        }
        const guint64 running = gst_segment_to_running_time(segment, GST_FORMAT_TIME, pts);
        if (!GST_CLOCK_TIME_IS_VALID(running)) {
            return now;
        }
        const auto clock_time = static_cast<std::int64_t>(running + base_time);
        // Never after the moment the frame was taken: rtpjitterbuffer's skew-smoothed PTS can run
        // ahead of the arrival by the jitter of the packets it started from (seen under load).
        return std::min(now, steady_at_sync +
                                 nanoseconds(clock_time - static_cast<std::int64_t>(clock_at_sync)));
    }

    // Fills `out` from `sample` (taking the reference); false (and `error`) if it is unusable.
    bool to_frame(GstSample* sample, gst_frame& out, std::string& error) {
        const auto now = steady_clock::now();
        GstCaps* caps = gst_sample_get_caps(sample);
        GstBuffer* buffer = gst_sample_get_buffer(sample);
        if (fail_conversions > 0) {
            --fail_conversions;
            gst_sample_unref(sample);
            error = "appsink: unexpected caps (not BGR video; a failure made by a test)";
            return false;
        }
        if (caps == nullptr || buffer == nullptr) {
            gst_sample_unref(sample);
            error = "appsink: a sample without caps or buffer";
            return false;
        }
        if (caps != info_caps) {
            if (gst_video_info_from_caps(&info, caps) == FALSE ||
                GST_VIDEO_INFO_FORMAT(&info) != GST_VIDEO_FORMAT_BGR) {
                gst_sample_unref(sample);
                error = "appsink: unexpected caps (not BGR video)";
                return false;
            }
            gst_caps_replace(&info_caps, caps);
        }
        const GstClockTime pts = GST_BUFFER_PTS(buffer);
        out.pts = GST_CLOCK_TIME_IS_VALID(pts)
                      ? std::optional<nanoseconds>(nanoseconds(static_cast<std::int64_t>(pts)))
                      : std::nullopt;
        out.captured = captured(sample, pts, now);
        out.key_frame = is_key(pts);
        out.index_in_connection = index++;

        // Read-only: the appsink still holds references to the buffer (measured: 2 or 3 at
        // this point), so it is never writable; a wrapped image must be cloned to draw on.
        if (options.memory == frame_memory::copy) {
            // Mapped on the stack: copy mode allocates nothing of its own per frame.
            GstVideoFrame mapped{};
            if (gst_video_frame_map(&mapped, &info, buffer, GST_MAP_READ) == FALSE) {
                gst_sample_unref(sample);
                error = "appsink: the frame cannot be mapped";
                return false;
            }
            const cv::Mat view(GST_VIDEO_FRAME_HEIGHT(&mapped), GST_VIDEO_FRAME_WIDTH(&mapped),
                               CV_8UC3, GST_VIDEO_FRAME_PLANE_DATA(&mapped, 0),
                               static_cast<std::size_t>(GST_VIDEO_FRAME_PLANE_STRIDE(&mapped, 0)));
            // A new Mat unless the one given is ours alone (then its memory is reused).
            if (out.image.u == nullptr || out.image.u->refcount != 1 ||
                out.image.size() != view.size() || out.image.type() != CV_8UC3 ||
                !out.image.isContinuous()) {
                out.image = cv::Mat(view.size(), CV_8UC3);
            }
            view.copyTo(out.image);
            gst_video_frame_unmap(&mapped);
            gst_sample_unref(sample);
            return true;
        }
        auto m = std::make_unique<mapped_sample>();
        m->sample = sample;
        if (gst_video_frame_map(&m->frame, &info, buffer, GST_MAP_READ) == FALSE) {
            gst_sample_unref(sample);
            error = "appsink: the frame cannot be mapped";
            return false;
        }
        const int width = GST_VIDEO_FRAME_WIDTH(&m->frame);
        const int height = GST_VIDEO_FRAME_HEIGHT(&m->frame);
        auto* data = static_cast<uchar*>(GST_VIDEO_FRAME_PLANE_DATA(&m->frame, 0));
        const auto stride = static_cast<std::size_t>(GST_VIDEO_FRAME_PLANE_STRIDE(&m->frame, 0));
        cv::Mat view(height, width, CV_8UC3, data, stride);
        // Wrap: the Mat owns the mapping through a UMatData (see sample_allocator).
        auto* u = new cv::UMatData(&the_sample_allocator());
        u->data = u->origdata = data;
        u->size = stride * static_cast<std::size_t>(height);
        u->flags = cv::UMatData::USER_ALLOCATED;
        u->userdata = m.release();
        u->refcount = 1;
        view.u = u;
        out.image = std::move(view);
        return true;
    }

    void close() noexcept {
        if (pending != nullptr) {
            gst_sample_unref(pending);
            pending = nullptr;
        }
        if (pipeline != nullptr) {
            // Synchronous: every streaming thread has stopped when it returns. rtspsrc's
            // TEARDOWN waits at most its teardown-timeout (100 ms).
            gst_element_set_state(pipeline, GST_STATE_NULL);
            // Every streaming thread has stopped: whatever arrived and read() neither returned
            // nor failed to convert (still in the appsink, or taken by open() and never read)
            // was dropped before read.
            const auto a = arrived.load(std::memory_order_relaxed);
            const auto accounted = delivered + unconvertible.load(std::memory_order_relaxed);
            if (a > accounted) {
                dropped.store(std::max(dropped.load(std::memory_order_relaxed), a - accounted),
                              std::memory_order_relaxed);
            }
        }
        if (appsink != nullptr) {
            gst_object_unref(appsink);
            appsink = nullptr;
        }
        if (demux != nullptr) {
            gst_object_unref(demux);
            demux = nullptr;
        }
        if (bus != nullptr) {
            gst_object_unref(bus);
            bus = nullptr;
        }
        if (pipeline != nullptr) {
            gst_object_unref(pipeline);
            pipeline = nullptr;
        }
        gst_caps_replace(&info_caps, nullptr);
        index = 0;
        map_clock = false;
        seen_key = false;
        has_decoder = false;
        video_selected = false;
        key_pts.fill(GST_CLOCK_TIME_NONE);
        key_next = 0;
        last_warning.clear();
    }
};

gst_capture::gst_capture(gst_capture_options options)
    : impl_(std::make_unique<impl>(std::move(options))) {
    impl_->key_pts.fill(GST_CLOCK_TIME_NONE);
}

gst_capture::~gst_capture() { close(); }
gst_capture::gst_capture(gst_capture&&) noexcept = default;
gst_capture& gst_capture::operator=(gst_capture&& other) noexcept {
    if (this != &other) {
        close();
        impl_ = std::move(other.impl_);
    }
    return *this;
}

bool gst_capture::is_open() const noexcept { return impl_ && impl_->pipeline != nullptr; }

const gst_capture_options& gst_capture::options() const noexcept { return impl_->options; }

std::uint64_t gst_capture::skipped_before_decode() const noexcept {
    return impl_ ? impl_->dropped_before_key.load(std::memory_order_relaxed) : 0;
}

std::uint64_t gst_capture::dropped_before_read() const noexcept {
    if (!impl_) {
        return 0;
    }
    // `taken` first (acquire): `dropped` is then at least as new, and `arrived` at least
    // `taken`. Between two takes, arrivals not taken are dropped but for at most two: one
    // waiting in the appsink, one on its way in (the streaming thread brings one at a time).
    const auto taken = impl_->taken.load(std::memory_order_acquire);
    const auto dropped = impl_->dropped.load(std::memory_order_relaxed);
    const auto arrived = impl_->arrived.load(std::memory_order_relaxed);
    return std::max(dropped, arrived > taken + 2 ? arrived - taken - 2 : 0);
}

std::uint64_t gst_capture::largest_part_bytes() const noexcept {
    return impl_ ? impl_->largest_part.load(std::memory_order_relaxed) : 0;
}

std::uint64_t gst_capture::unconvertible() const noexcept {
    return impl_ ? impl_->unconvertible.load(std::memory_order_relaxed) : 0;
}

void gst_capture::fail_next_conversions_for_testing(std::uint64_t n) noexcept {
    if (impl_) {
        impl_->fail_conversions = n;
    }
}

std::string gst_capture::describe(const gst_capture_options& options, std::string* error) {
    const auto s = classify(options);
    if (error != nullptr) {
        *error = s.error;
    }
    if (!s.error.empty()) {
        return {};
    }
    return pipeline_text(options, s, &s.location);
}

void gst_capture::close() noexcept {
    if (impl_) {
        impl_->close();
    }
}

std::string gst_capture::open(std::stop_token stop, nanoseconds timeout) {
    if (!impl_) {
        return "open: a moved-from gst_capture";
    }
    const auto deadline = steady_clock::now() + timeout;
    auto& d = *impl_;
    d.close();
    d.dropped_before_key = 0; // a new connection's accounting (see impl)
    d.arrived = 0;
    d.recent_arrivals.fill({nullptr, 0});
    d.taken = 0;
    d.dropped = 0;
    d.last_taken_arrival = 0;
    d.delivered = 0;
    d.unconvertible = 0;
    d.part_bytes = 0;
    d.largest_part = 0;
    d.part_overflow = false;
    d.source = classify(d.options);
    if (!d.source.error.empty()) {
        return d.source.error;
    }
    if (d.source.kind == source_kind::file) {
        // filesrc opens and reads with blocking calls: a FIFO (or a device) would hang open()
        // past its timeout and stop token, and close() while read(2) waits. A missing file is
        // left to filesrc, which names it.
        struct stat st{};
        if (::stat(d.source.location.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
            return "'" + d.source.location + "': not a regular file";
        }
    }
    if (const auto& err = gst_init_error(); !err.empty()) {
        return err;
    }
    d.live = d.source.kind != source_kind::file;

    GError* err = nullptr;
    GstElement* pipeline = gst_parse_launch(pipeline_text(d.options, d.source, nullptr).c_str(), &err);
    if (err != nullptr || pipeline == nullptr) {
        std::string text = std::string("cannot build the pipeline: ") +
                           (err != nullptr ? err->message : "unknown error");
        if (err != nullptr) {
            g_error_free(err);
        }
        if (pipeline != nullptr) {
            gst_object_unref(pipeline);
        }
        return one_line(text);
    }
    d.pipeline = pipeline;
    d.bus = gst_element_get_bus(pipeline);
    d.appsink = gst_bin_get_by_name(GST_BIN(pipeline), "appsink");
    const char* source_name = nullptr;
    const char* property = "location";
    switch (d.source.kind) {
    case source_kind::rtsp: source_name = "rtspsrc"; break;
    case source_kind::http: source_name = "souphttpsrc"; break;
    case source_kind::file: source_name = "filesrc"; break;
    case source_kind::camera: source_name = "v4l2src"; property = "device"; break;
    }
    GstElement* source = gst_bin_get_by_name(GST_BIN(pipeline), source_name);
    if (source == nullptr || d.appsink == nullptr) {
        if (source != nullptr) {
            gst_object_unref(source);
        }
        d.close();
        return "cannot build the pipeline: its elements are missing";
    }
    g_object_set(source, property, d.source.location.c_str(), nullptr);
    if (d.source.kind == source_kind::rtsp) {
        g_signal_connect(source, "select-stream", G_CALLBACK(&impl::on_select_stream), &d);
    }
    gst_object_unref(source);
    if (d.source.kind == source_kind::http) {
        // The part cap (see impl::on_demux_input): the demuxer's input, and its parts out.
        d.demux = gst_bin_get_by_name(GST_BIN(pipeline), "multipartdemux");
        GstPad* pad = d.demux != nullptr ? gst_element_get_static_pad(d.demux, "sink") : nullptr;
        if (pad == nullptr) {
            d.close();
            return "cannot build the pipeline: its elements are missing";
        }
        gst_pad_add_probe(pad,
                          static_cast<GstPadProbeType>(GST_PAD_PROBE_TYPE_BUFFER |
                                                       GST_PAD_PROBE_TYPE_BUFFER_LIST),
                          &impl::on_demux_input, &d, nullptr);
        gst_object_unref(pad);
        g_signal_connect(d.demux, "pad-added", G_CALLBACK(&impl::on_demux_pad_added), &d);
    }
    g_signal_connect(pipeline, "deep-element-added", G_CALLBACK(&impl::on_element_added), &d);
    if (GstPad* pad = gst_element_get_static_pad(d.appsink, "sink"); pad != nullptr) {
        gst_pad_add_probe(pad,
                          static_cast<GstPadProbeType>(GST_PAD_PROBE_TYPE_BUFFER |
                                                       GST_PAD_PROBE_TYPE_BUFFER_LIST),
                          &impl::on_appsink_input, &d, nullptr);
        gst_object_unref(pad);
    }

    if (gst_element_set_state(pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
        // The failing element posted its error before the state change returned.
        std::string text = d.bus_error();
        d.close();
        return text.empty() ? "the pipeline does not start" : text;
    }
    for (;;) {
        const auto left = deadline - steady_clock::now();
        if (stop.stop_requested()) {
            d.close();
            return "stopped";
        }
        bool eos = false;
        if (std::string text = d.bus_error(&eos); !text.empty()) {
            d.close();
            return text;
        }
        if (GstSample* sample = gst_app_sink_try_pull_sample(
                GST_APP_SINK(d.appsink),
                static_cast<GstClockTime>(std::clamp(left, nanoseconds(0), slice).count()))) {
            d.sync_clocks();
            d.pending = d.take(sample);
            return {};
        }
        if (eos || gst_app_sink_is_eos(GST_APP_SINK(d.appsink)) != FALSE) {
            std::string text = "the stream ended before its first frame";
            if (!d.last_warning.empty()) {
                text += ": " + d.last_warning;
            }
            d.close();
            return text;
        }
        if (left <= nanoseconds(0)) {
            // How far it got, to tell a silent server from a stream without key frames.
            std::string text = "no frame within " + ms_text(timeout);
            if (const auto n = d.dropped_before_key.load(); n > 0) {
                text += " (" + std::to_string(n) + " delta units dropped waiting for a key frame)";
            } else if (d.has_decoder.load()) {
                text += " (the stream's data came, no frame was decoded)";
            } else if (d.source.kind == source_kind::rtsp && !d.video_selected.load()) {
                text += " (no video stream described by the server yet)";
            } else {
                text += " (no data)";
            }
            if (!d.last_warning.empty()) {
                text += "; last warning: " + d.last_warning;
            }
            d.close();
            return text;
        }
    }
}

gst_capture::status gst_capture::read(std::stop_token stop, nanoseconds timeout, gst_frame& out,
                                      std::string& error) {
    if (!is_open()) {
        error = "read: not open";
        return status::error;
    }
    auto& d = *impl_;
    if (d.pending != nullptr) {
        return d.deliver(std::exchange(d.pending, nullptr), out, error);
    }
    const auto deadline = steady_clock::now() + timeout;
    for (;;) {
        if (stop.stop_requested()) {
            return status::timeout;
        }
        const auto left = deadline - steady_clock::now();
        if (GstSample* sample = gst_app_sink_try_pull_sample(
                GST_APP_SINK(d.appsink),
                static_cast<GstClockTime>(std::clamp(left, nanoseconds(0), slice).count()))) {
            return d.deliver(d.take(sample), out, error);
        }
        if (std::string text = d.bus_error(); !text.empty()) {
            error = std::move(text);
            return status::error;
        }
        if (gst_app_sink_is_eos(GST_APP_SINK(d.appsink)) != FALSE) {
            if (!d.live) {
                return status::end;
            }
            // A camera has no end: the server closed the stream (rtspsrc posts a warning
            // "The server closed the connection" and then EOS). An error, so that a
            // supervisor reconnects rather than ends.
            (void)d.bus_error(); // collects that warning
            error = "the live stream ended";
            if (!d.last_warning.empty()) {
                error += ": " + d.last_warning;
            }
            return status::error;
        }
        if (left <= nanoseconds(0)) {
            return status::timeout;
        }
    }
}

} // namespace framepipe_examples
