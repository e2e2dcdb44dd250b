// vitedge_classify: a vitedge bundle in a C++ application, on OpenVINO's C++ runtime.
//
//   vitedge_classify BUNDLE_DIR IMAGE_OR_DIR... [--top K] [--threads N] [--json]
//
// Reads the bundle's manifest.json (artifact file, input spec, class names, the runtime options
// the parity gate ran with), decodes JPEG/PNG files with the distribution's libjpeg and libpng,
// runs the IR and prints the top-K classes per image. The bundle must carry its preprocessing
// (`vitedge export ... --embed-preprocessing`): the app hands the decoded RGB pixels over at
// their own size and the IR resizes, crops and normalises inside, exactly as it was judged.
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

struct Bundle {
    fs::path model;
    std::vector<std::string> classes;
    std::string inference_precision;  // the runner option the parity gate ran with ("" if none)
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
    const json& input = m.at("input");
    if (!input.contains("embedded_preprocessing") || input["embedded_preprocessing"].value("size", "") != "any")
        throw UsageError(dir.string() + ": the bundle does not carry its preprocessing; re-export it with "
                         "--embed-preprocessing (this app does no resizing or normalising itself)");
    if (!m.value("parity", json::object()).value("passed", false))
        throw UsageError(dir.string() + ": this artifact failed its parity gate at export (see report.md)");
    Bundle b;
    b.model = dir / m.at("artifact").at("file").get<std::string>();
    b.classes = m.at("card").at("classes").get<std::vector<std::string>>();
    const json& opts = m.at("artifact").value("runner_options", json::object());
    b.inference_precision = opts.value("inference_precision", "");
    return b;
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
        ov::CompiledModel compiled = core.compile_model(core.read_model(bundle.model.string()), "CPU", config);
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
