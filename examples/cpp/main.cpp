// vitedge_classify: a vitedge bundle in a C++ application, on OpenVINO's C++ runtime.
//
//   vitedge_classify BUNDLE_DIR IMAGE_OR_DIR... [--top K] [--threads N] [--json]
//
// Reads the bundle's manifest.json (artifact file, input spec, class names, preprocessing, the
// runtime options the parity gate ran with), decodes JPEG/PNG files with the distribution's
// libjpeg and libpng, runs the IR and prints the top-K classes per image. The decoded RGB pixels
// go to the model at their own size either way:
// - a bundle exported with --embed-preprocessing resizes, crops and normalises inside, exactly
//   as it was judged;
// - any other OpenVINO bundle gets the same steps here, built from the manifest's preprocessing
//   numbers with OpenVINO's PrePostProcessor (the ops vitedge embeds: Pillow-exact resize,
//   centre crop, mean/std), so the app never re-implements them by hand.
// --json prints one object per image with every logit (what the project's test compares with
// vitedge.load()). Exit codes: 0 ok, 2 bad usage/input, 3 a runtime error.
// Not done here, which vitedge.load() does: EXIF orientation (libjpeg does not read it: rotate
// such photos first, or add libexif), the sha256 check of the bundle's files, CMYK JPEGs.

#include <cstddef>
#include <cstdio>  // before jpeglib.h, which uses FILE and size_t without including them
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <openvino/core/preprocess/pre_post_process.hpp>
#include <openvino/op/ops.hpp>
#include <openvino/openvino.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Image {
    int height = 0;
    int width = 0;
    std::vector<uint8_t> rgb;  // height * width * 3, row by row (HWC), RGB
};

// -- decoding -------------------------------------------------------------------------------

struct JpegError {
    jpeg_error_mgr mgr;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

void on_jpeg_error(j_common_ptr cinfo) {
    auto* err = reinterpret_cast<JpegError*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, err->message);
    std::longjmp(err->jump, 1);
}

Image decode_jpeg(const fs::path& path) {
    std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) throw UsageError(path.string() + ": cannot open");
    jpeg_decompress_struct cinfo{};
    JpegError err{};
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = on_jpeg_error;
    Image img;
    if (setjmp(err.jump)) {  // libjpeg reports errors by longjmp; nothing with a destructor lives between
        jpeg_destroy_decompress(&cinfo);
        throw UsageError(path.string() + ": not a readable JPEG (" + err.message + ")");
    }
    jpeg_create_decompress(&cinfo);
    jpeg_stdio_src(&cinfo, file.get());
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        throw UsageError(path.string() + ": CMYK JPEG; convert it to RGB first");
    }
    cinfo.out_color_space = JCS_RGB;  // grayscale is expanded to RGB, as vitedge's loader does
    jpeg_start_decompress(&cinfo);
    img.height = static_cast<int>(cinfo.output_height);
    img.width = static_cast<int>(cinfo.output_width);
    img.rgb.resize(static_cast<size_t>(img.height) * img.width * 3);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = img.rgb.data() + static_cast<size_t>(cinfo.output_scanline) * img.width * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return img;
}

Image decode_png(const fs::path& path) {
    png_image png{};
    png.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&png, path.c_str()))
        throw UsageError(path.string() + ": not a readable PNG (" + png.message + ")");
    // Read RGBA and drop the alpha, as Pillow's convert("RGB") does: libpng's RGB output would
    // composite onto black instead. (libpng's simplified API converts 16-bit and gAMA-tagged
    // files to 8-bit sRGB; Pillow does not: such files decode a little differently.)
    png.format = PNG_FORMAT_RGBA;
    std::vector<uint8_t> rgba(PNG_IMAGE_SIZE(png));
    if (!png_image_finish_read(&png, nullptr, rgba.data(), 0, nullptr)) {
        std::string message = png.message;
        png_image_free(&png);
        throw UsageError(path.string() + ": PNG decoding failed (" + message + ")");
    }
    Image img;
    img.height = static_cast<int>(png.height);
    img.width = static_cast<int>(png.width);
    img.rgb.resize(static_cast<size_t>(img.height) * img.width * 3);
    for (size_t i = 0, n = static_cast<size_t>(img.height) * img.width; i < n; ++i)
        std::memcpy(&img.rgb[i * 3], &rgba[i * 4], 3);
    return img;
}

Image load_image(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    unsigned char magic[8] = {};
    if (!in.read(reinterpret_cast<char*>(magic), sizeof magic))
        throw UsageError(path.string() + ": too short to be an image");
    if (magic[0] == 0xFF && magic[1] == 0xD8) return decode_jpeg(path);
    if (png_sig_cmp(magic, 0, sizeof magic) == 0) return decode_png(path);
    throw UsageError(path.string() + ": not a JPEG or PNG file");
}

std::vector<fs::path> image_files(const std::vector<std::string>& args) {
    std::vector<fs::path> out;
    for (const auto& a : args) {
        fs::path p(a);
        if (fs::is_directory(p)) {
            std::vector<fs::path> found;
            for (const auto& e : fs::directory_iterator(p)) {
                std::string ext = e.path().extension().string();
                std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
                if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png"))
                    found.push_back(e.path());
            }
            std::sort(found.begin(), found.end());
            out.insert(out.end(), found.begin(), found.end());
        } else if (fs::is_regular_file(p)) {
            out.push_back(p);
        } else {
            throw UsageError(a + ": no such file or directory");
        }
    }
    if (out.empty()) throw UsageError("no JPEG/PNG images found in the given paths");
    return out;
}

// -- the bundle -----------------------------------------------------------------------------

// The model card's preprocessing (vitedge.calib.preprocess.PreprocessSpec, as in the manifest).
struct Preprocess {
    int64_t height = 224, width = 224;
    std::vector<float> mean{0.485f, 0.456f, 0.406f}, std{0.229f, 0.224f, 0.225f};
    std::string interpolation = "bicubic", crop_rounding = "round", channel_order = "RGB";
    double crop_pct = 1.0, rescale = 1.0 / 255.0;
    std::vector<int64_t> resize_to;  // empty: timm's rule; {S}: shorter side; {H, W}: exactly
};

struct Bundle {
    fs::path model;
    std::vector<std::string> classes;
    std::string inference_precision;  // the runner option the parity gate ran with ("" if none)
    bool embedded = false;  // the IR takes pixels and preprocesses inside
    Preprocess pre;
};

Bundle read_bundle(const fs::path& dir) {
    std::ifstream in(dir / "manifest.json");
    if (!in) throw UsageError((dir / "manifest.json").string() + ": not a vitedge bundle (no manifest.json)");
    json m;
    try {
        in >> m;
    } catch (const json::exception& e) {
        throw UsageError((dir / "manifest.json").string() + ": unreadable (" + e.what() + ")");
    }
    const std::string runtime = m.value("runtime", "");
    if (runtime != "openvino")
        throw UsageError(dir.string() + ": a " + runtime + " bundle; this app runs OpenVINO bundles "
                         "(export with --target ov-fp32, ov-fp16 or ov-int8)");
    if (!m.value("parity", json::object()).value("passed", false))
        throw UsageError(dir.string() + ": this artifact failed its parity gate at export (see report.md)");
    Bundle b;
    const json& input = m.at("input");
    b.embedded = input.contains("embedded_preprocessing");
    if (b.embedded && input["embedded_preprocessing"].value("size", "") != "any")
        throw UsageError(dir.string() + ": the artifact takes a fixed-size frame; this app feeds any size");
    const json& pre = m.at("card").at("preprocess");
    b.pre.height = pre.at("input_size").at(0).get<int64_t>();
    b.pre.width = pre.at("input_size").at(1).get<int64_t>();
    b.pre.mean = pre.value("mean", b.pre.mean);
    b.pre.std = pre.value("std", b.pre.std);
    b.pre.interpolation = pre.value("interpolation", b.pre.interpolation);
    b.pre.crop_pct = pre.value("crop_pct", b.pre.crop_pct);
    b.pre.crop_rounding = pre.value("crop_rounding", b.pre.crop_rounding);
    b.pre.channel_order = pre.value("channel_order", b.pre.channel_order);
    b.pre.rescale = pre.value("rescale", b.pre.rescale);
    if (pre.contains("resize_to") && !pre["resize_to"].is_null())
        b.pre.resize_to = pre["resize_to"].get<std::vector<int64_t>>();
    if (!b.embedded && b.pre.interpolation != "bilinear" && b.pre.interpolation != "bicubic" &&
        b.pre.interpolation != "nearest")
        throw UsageError(dir.string() + ": its preprocessing resizes with " + b.pre.interpolation +
                         ", which OpenVINO's ops do not reproduce");
    b.model = dir / m.at("artifact").at("file").get<std::string>();
    b.classes = m.at("card").at("classes").get<std::vector<std::string>>();
    const json& opts = m.at("artifact").value("runner_options", json::object());
    b.inference_precision = opts.value("inference_precision", "");
    return b;
}

// -- preprocessing for a bundle that does not carry it ---------------------------------------------

std::shared_ptr<ov::Node> i64(const std::vector<int64_t>& v) {
    return ov::op::v0::Constant::create(ov::element::i64, {v.size()}, v);
}

std::shared_ptr<ov::Node> i64_scalar(int64_t v) { return ov::op::v0::Constant::create(ov::element::i64, {}, {v}); }

// f32 NCHW pixels of any size -> the model input: the steps of vitedge.targets.openvino._pixel_steps
// (resize as vitedge.calib.preprocess.resize_rule, Pillow's filter, centre crop, mean/std).
ov::Output<ov::Node> pixel_steps(const ov::Output<ov::Node>& node, const Preprocess& p) {
    using namespace ov::op;
    int64_t sh, sw;
    if (p.resize_to.empty()) {
        sh = static_cast<int64_t>(std::floor(p.height / p.crop_pct));
        sw = static_cast<int64_t>(std::floor(p.width / p.crop_pct));
    } else if (p.resize_to.size() == 1) {
        sh = sw = p.resize_to[0];
    } else {
        sh = p.resize_to[0];
        sw = p.resize_to[1];
    }
    const bool shorter = sh == sw && p.resize_to.size() != 2;
    std::shared_ptr<ov::Node> new_hw;
    if (shorter) {  // integer arithmetic: floor(S * side / short), torchvision's sizes
        auto hw = std::make_shared<v8::Gather>(std::make_shared<v3::ShapeOf>(node, ov::element::i64), i64({2, 3}),
                                               i64_scalar(0));
        auto shortest = std::make_shared<v1::ReduceMin>(hw, i64_scalar(0), false);
        new_hw = std::make_shared<v1::Divide>(std::make_shared<v1::Multiply>(hw, i64_scalar(sh)), shortest);
    } else {
        new_hw = i64({sh, sw});
    }
    using Base = ov::op::util::InterpolateBase;
    Base::InterpolateAttrs attrs;
    attrs.mode = p.interpolation == "bicubic"    ? Base::InterpolateMode::BICUBIC_PILLOW
                 : p.interpolation == "bilinear" ? Base::InterpolateMode::BILINEAR_PILLOW
                                                 : Base::InterpolateMode::NEAREST;
    attrs.shape_calculation_mode = Base::ShapeCalcMode::SIZES;
    attrs.coordinate_transformation_mode = Base::CoordinateTransformMode::HALF_PIXEL;
    attrs.antialias = true;
    attrs.cube_coeff = -0.5;
    auto resized = std::make_shared<v11::Interpolate>(node, new_hw, i64({2, 3}), attrs);
    auto margin = std::make_shared<v1::Subtract>(new_hw, i64({p.height, p.width}));
    std::shared_ptr<ov::Node> start;
    if (p.crop_rounding == "floor") {
        start = std::make_shared<v1::Divide>(margin, i64_scalar(2));
    } else {  // Python's round(): half to even
        auto half = std::make_shared<v1::Divide>(std::make_shared<v0::Convert>(margin, ov::element::f32),
                                                 v0::Constant::create(ov::element::f32, {}, {2.0f}));
        start = std::make_shared<v0::Convert>(std::make_shared<v5::Round>(half, v5::Round::RoundMode::HALF_TO_EVEN),
                                              ov::element::i64);
    }
    auto stop = std::make_shared<v1::Add>(start, i64({p.height, p.width}));
    auto cropped = std::make_shared<v8::Slice>(resized, start, stop, i64({1, 1}), i64({2, 3}));
    auto px = std::make_shared<v5::Round>(std::make_shared<v0::Clamp>(cropped, 0.0, 255.0),
                                          v5::Round::RoundMode::HALF_TO_EVEN);
    std::vector<float> mean(3), stdv(3);
    for (int c = 0; c < 3; ++c) {
        mean[c] = p.mean[c] / static_cast<float>(p.rescale);
        stdv[c] = p.std[c] / static_cast<float>(p.rescale);
    }
    std::shared_ptr<ov::Node> x = std::make_shared<v1::Divide>(
        std::make_shared<v1::Subtract>(px, v0::Constant::create(ov::element::f32, {1, 3, 1, 1}, mean)),
        v0::Constant::create(ov::element::f32, {1, 3, 1, 1}, stdv));
    if (p.channel_order == "BGR") x = std::make_shared<v8::Gather>(x, i64({2, 1, 0}), i64_scalar(1));
    return x->output(0);
}

std::shared_ptr<ov::Model> with_preprocessing(std::shared_ptr<ov::Model> model, const Preprocess& p) {
    model->reshape({{model->input().get_any_name(), ov::PartialShape{-1, 3, p.height, p.width}}});
    ov::preprocess::PrePostProcessor ppp(model);
    ppp.input().tensor().set_element_type(ov::element::u8).set_layout("NHWC").set_spatial_dynamic_shape();
    ppp.input().model().set_layout("NCHW");
    ppp.input().preprocess().convert_element_type(ov::element::f32).convert_layout("NCHW").custom(
        [&p](const ov::Output<ov::Node>& node) { return pixel_steps(node, p); });
    return ppp.build();
}

ov::element::Type precision_of(const std::string& name) {
    if (name == "f32") return ov::element::f32;
    if (name == "f16") return ov::element::f16;
    if (name == "bf16") return ov::element::bf16;
    throw UsageError("manifest: unknown inference_precision " + name);
}

std::string json_string(const std::string& s) { return json(s).dump(); }

}  // namespace

int main(int argc, char** argv) {
    try {
        std::vector<std::string> paths;
        int top = 5;
        int threads = 0;
        bool as_json = false;
        for (int i = 1; i < argc; ++i) {
            std::string a = argv[i];
            if ((a == "--top" || a == "--threads") && i + 1 < argc) {
                int v = std::atoi(argv[++i]);
                if (v < 1) throw UsageError(a + " must be >= 1");
                (a == "--top" ? top : threads) = v;
            } else if (a == "--json") {
                as_json = true;
            } else if (a == "-h" || a == "--help") {
                std::cout << "usage: vitedge_classify BUNDLE_DIR IMAGE_OR_DIR... [--top K] [--threads N] [--json]\n";
                return 0;
            } else if (!a.empty() && a[0] == '-') {
                throw UsageError("unknown option " + a);
            } else {
                paths.push_back(a);
            }
        }
        if (paths.size() < 2)
            throw UsageError("usage: vitedge_classify BUNDLE_DIR IMAGE_OR_DIR... [--top K] [--threads N] [--json]");
        Bundle bundle = read_bundle(paths[0]);
        std::vector<fs::path> images = image_files({paths.begin() + 1, paths.end()});

        ov::Core core;
        // The same settings vitedge's Python runner uses: one stream, latency, the pinned precision.
        ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::num_streams(1)};
        if (!bundle.inference_precision.empty())
            config.emplace(ov::hint::inference_precision(precision_of(bundle.inference_precision)));
        if (threads > 0) config.emplace(ov::inference_num_threads(threads));
        std::shared_ptr<ov::Model> model = core.read_model(bundle.model.string());
        if (!bundle.embedded) model = with_preprocessing(model, bundle.pre);
        ov::CompiledModel compiled = core.compile_model(model, "CPU", config);
        ov::InferRequest request = compiled.create_infer_request();

        for (const auto& path : images) {
            Image img = load_image(path);
            ov::Tensor input(ov::element::u8, {1, static_cast<size_t>(img.height), static_cast<size_t>(img.width), 3},
                             img.rgb.data());
            request.set_input_tensor(input);
            request.infer();
            const ov::Tensor out = request.get_output_tensor();
            const float* logits = out.data<const float>();
            const size_t n = out.get_size();
            if (n != bundle.classes.size())
                throw std::runtime_error("the model gives " + std::to_string(n) + " logits for " +
                                         std::to_string(bundle.classes.size()) + " classes");
            const float peak = *std::max_element(logits, logits + n);
            std::vector<double> prob(n);
            double sum = 0;
            for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp(static_cast<double>(logits[i]) - peak);
            for (auto& p : prob) p /= sum;
            std::vector<size_t> order(n);
            std::iota(order.begin(), order.end(), 0);
            const size_t k = std::min(static_cast<size_t>(top), n);
            std::partial_sort(order.begin(), order.begin() + k, order.end(),
                              [&](size_t a, size_t b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); });
            if (as_json) {
                std::cout << "{\"file\": " << json_string(path.string()) << ", \"top1\": " << order[0]
                          << ", \"label\": " << json_string(bundle.classes[order[0]]) << ", \"logits\": [";
                std::cout << std::setprecision(9);
                for (size_t i = 0; i < n; ++i) std::cout << (i ? ", " : "") << logits[i];
                std::cout << "]}\n";
            } else {
                std::cout << path.filename().string() << " (" << img.width << "x" << img.height << ")\n";
                for (size_t j = 0; j < k; ++j)
                    std::cout << "  " << std::fixed << std::setprecision(4) << prob[order[j]] << "  "
                              << bundle.classes[order[j]] << "\n";
            }
        }
        return 0;
    } catch (const UsageError& e) {
        std::cerr << "vitedge_classify: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "vitedge_classify: runtime error: " << e.what() << "\n";
        return 3;
    }
}
