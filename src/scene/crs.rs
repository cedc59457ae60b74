//! A GeoTIFF's CRS as GDAL reads it, from its GeoKeys: an EPSG code looked up in the EPSG
//! table of `crs-definitions` (6,184 codes, PROJ strings generated from the EPSG registry), or
//! a user-defined CRS spelled out in projection parameters; the linear unit taken from
//! ProjLinearUnitsGeoKey, else from a citation (IMAGINE's `Units = …`, GDAL's `LUnits = …`,
//! an ESRI PE string), and applied as GDAL applies it (the false easting keeps its length in
//! metres); the angular unit from GeogAngularUnitsGeoKey.
//!
//! The result is a PROJ string for `proj4rs` plus what a reader of the output must know: the
//! datum's shift to WGS 84 when it needs grids (NAD27) or is not known is not applied, and
//! the caller says so ([`Crs::datum_note`]) instead of passing such coordinates off as WGS 84.
//!
//! Written by hand: no Rust crate reads GeoKeys into a CRS (libgeotiff and GDAL do it in C).

use anyhow::{Result, anyhow, bail};

// GeoKey ids (GeoTIFF 1.1, section 7).
pub const GT_MODEL_TYPE: u16 = 1024;
pub const GT_RASTER_TYPE: u16 = 1025;
const GT_CITATION: u16 = 1026;
const GEOGRAPHIC_TYPE: u16 = 2048;
const GEOG_CITATION: u16 = 2049;
const GEOG_DATUM: u16 = 2050;
const GEOG_ANGULAR_UNITS: u16 = 2054;
const GEOG_ANGULAR_UNIT_SIZE: u16 = 2055;
const GEOG_ELLIPSOID: u16 = 2056;
const GEOG_SEMI_MAJOR: u16 = 2057;
const GEOG_SEMI_MINOR: u16 = 2058;
const GEOG_INV_FLATTENING: u16 = 2059;
const PROJECTED_CS_TYPE: u16 = 3072;
const PCS_CITATION: u16 = 3073;
const PROJECTION: u16 = 3074;
const PROJ_COORD_TRANS: u16 = 3075;
const PROJ_LINEAR_UNITS: u16 = 3076;
const PROJ_LINEAR_UNIT_SIZE: u16 = 3077;
const STD_PARALLEL_1: u16 = 3078;
const STD_PARALLEL_2: u16 = 3079;
const NAT_ORIGIN_LONG: u16 = 3080;
const NAT_ORIGIN_LAT: u16 = 3081;
const FALSE_EASTING: u16 = 3082;
const FALSE_NORTHING: u16 = 3083;
const FALSE_ORIGIN_LONG: u16 = 3084;
const FALSE_ORIGIN_LAT: u16 = 3085;
const FALSE_ORIGIN_EASTING: u16 = 3086;
const FALSE_ORIGIN_NORTHING: u16 = 3087;
const CENTER_LONG: u16 = 3088;
const CENTER_LAT: u16 = 3089;
const CENTER_EASTING: u16 = 3090;
const CENTER_NORTHING: u16 = 3091;
const SCALE_AT_NAT_ORIGIN: u16 = 3092;
const SCALE_AT_CENTER: u16 = 3093;
const STRAIGHT_VERT_POLE_LONG: u16 = 3095;
/// "User-defined" in GeoKeys: the value is spelled out in other keys instead of a code.
pub const USER_DEFINED: u16 = 32767;

/// The GeoKey directory with its double and ASCII parameters.
pub struct GeoKeys<'a> {
    pub directory: &'a [u16],
    pub doubles: &'a [f64],
    pub ascii: &'a str,
}

impl GeoKeys<'_> {
    fn entries(&self) -> impl Iterator<Item = &[u16]> {
        let n = self.directory.get(3).copied().unwrap_or(0) as usize;
        self.directory
            .get(4..)
            .unwrap_or(&[])
            .chunks_exact(4)
            .take(n)
    }

    /// A SHORT key's value (stored in the directory itself).
    pub fn short(&self, id: u16) -> Option<u16> {
        self.entries()
            .find(|k| k[0] == id && k[1] == 0)
            .map(|k| k[3])
    }

    fn double(&self, id: u16) -> Option<f64> {
        let k = self.entries().find(|k| k[0] == id && k[1] == 34736)?;
        self.doubles.get(k[3] as usize).copied()
    }

    fn text(&self, id: u16) -> Option<String> {
        let k = self.entries().find(|k| k[0] == id && k[1] == 34737)?;
        let (start, len) = (k[3] as usize, k[2] as usize);
        let s = self.ascii.get(start..(start + len).min(self.ascii.len()))?;
        Some(s.trim_end_matches(['|', '\0']).to_string())
    }

    fn citations(&self) -> Vec<String> {
        [GT_CITATION, PCS_CITATION, GEOG_CITATION]
            .iter()
            .filter_map(|&id| self.text(id))
            .collect()
    }
}

/// A CRS ready for `proj4rs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Crs {
    /// The CRS as a PROJ string (projected coordinates in the file's unit, or degrees).
    pub proj: String,
    /// The geographic CRS that longitude/latitude are given on: WGS 84, or the CRS's own datum
    /// when its shift to WGS 84 is not applied.
    pub lon_lat: String,
    /// Whether the CRS is geographic.
    pub geographic: bool,
    /// Degrees per unit of a geographic CRS's coordinates (1 for degrees, 0.9 for grads).
    pub degrees_per_unit: f64,
    /// The EPSG code, when the file names one and does not redefine it.
    pub epsg: Option<u32>,
    /// For people: "EPSG:32633 (WGS 84 / UTM zone 33N)", "EPSG:2853 … in US survey feet", …
    pub name: String,
    /// Set when longitude/latitude are not on WGS 84 (a datum shift that needs grids, or one
    /// not known here): what they are on, and how far off WGS 84 they may be.
    pub datum_note: Option<String>,
}

/// Metres per unit of an EPSG linear unit code (the GeoTIFF spec's list and the common rest).
fn linear_unit(code: u16) -> Option<(f64, &'static str)> {
    Some(match code {
        9001 => (1.0, "metre"),
        9002 => (0.3048, "foot"),
        9003 => (1200.0 / 3937.0, "US survey foot"),
        9004 => (0.3048008333333334, "modified American foot"),
        9005 => (0.3047972654, "Clarke's foot"),
        9006 => (0.30479951, "Indian foot"),
        9007 => (20.116684023368047, "link"),
        9008 => (0.201166195164, "Benoit link"),
        9009 => (0.201167651215526, "Sears link"),
        9010 => (20.1166195164, "Benoit chain"),
        9011 => (20.1167651215526, "Sears chain"),
        9012 => (0.914398414616029, "Sears yard"),
        9013 => (0.91439523, "Indian yard"),
        9014 => (1.8288, "fathom"),
        9015 => (1852.0, "nautical mile"),
        9030 => (1852.0, "nautical mile"),
        9036 => (1000.0, "kilometre"),
        9093 => (1609.344, "statute mile"),
        _ => return None,
    })
}

/// Degrees per unit of an EPSG angular unit code.
fn angular_unit(code: u16) -> Option<f64> {
    Some(match code {
        9101 => 180.0 / std::f64::consts::PI,
        9102 | 9122 => 1.0,
        9103 => 1.0 / 60.0,
        9104 => 1.0 / 3600.0,
        9105 | 9106 => 0.9,
        _ => return None,
    })
}

/// A unit named in words (citations), as metres per unit.
fn unit_from_words(w: &str) -> Option<(f64, &'static str)> {
    let w = w.trim().to_ascii_lowercase().replace([' ', '-'], "_");
    let w = w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    Some(match w {
        "m" | "meter" | "meters" | "metre" | "metres" => (1.0, "metre"),
        "us_survey_feet" | "us_survey_foot" | "foot_us" | "feet_us" | "us_feet" | "us_foot"
        | "ftus" | "survey_feet" => linear_unit(9003)?,
        "feet" | "foot" | "ft" | "international_feet" | "international_foot" | "feet_intl"
        | "foot_intl" => linear_unit(9002)?,
        _ => return None,
    })
}

/// The linear unit a citation names: IMAGINE's "Units = …", GDAL's "LUnits = …", or the last
/// UNIT of an ESRI PE string. `Err` when a citation names a unit that is not known.
fn citation_unit(citations: &[String]) -> Result<Option<(f64, String)>> {
    for c in citations {
        if let Some(pe) = c.find("PROJCS[") {
            // The projected CRS's UNIT is the last one in an ESRI PE string.
            if let Some(at) = c[pe..].rfind("UNIT[") {
                let inner = &c[pe + at + 5..];
                let mut parts = inner.split(',');
                let name = parts.next().unwrap_or("").trim_matches('"').to_string();
                let factor: Option<f64> = parts
                    .next()
                    .and_then(|f| f.trim_end_matches([']', ' ']).trim().parse().ok());
                match factor {
                    Some(f) if f > 0.0 => return Ok(Some((f, name))),
                    _ => bail!("the ESRI PE string's UNIT[{inner:.40}…] has no factor"),
                }
            }
        }
        for line in c.split(['\n', '|']) {
            let lower = line.to_ascii_lowercase();
            let value = lower
                .strip_prefix("units =")
                .or_else(|| lower.strip_prefix("lunits ="))
                .or_else(|| lower.strip_prefix("units="))
                .or_else(|| lower.strip_prefix("lunits="));
            if let Some(v) = value {
                return match unit_from_words(v) {
                    Some((f, n)) => Ok(Some((f, n.to_string()))),
                    None => bail!(
                        "a citation names the unit {:?}, which is not known here",
                        v.trim()
                    ),
                };
            }
        }
    }
    Ok(None)
}

/// The datum named in an EPSG WKT ("North_American_Datum_1983"), for people.
fn datum_name(code: u16) -> Option<String> {
    let wkt = crs_definitions::from_code(code)?.wkt;
    let at = wkt.find("DATUM[\"")? + 7;
    Some(wkt[at..].split('"').next()?.replace('_', " "))
}

/// The PROJ string and WKT name of an EPSG code.
fn epsg(code: u16) -> Result<(&'static str, String)> {
    let def = crs_definitions::from_code(code).ok_or_else(|| {
        anyhow!(
            "EPSG:{code} is not in the EPSG table (reproject the scene, e.g. gdalwarp -t_srs \
             EPSG:4326, or to its UTM zone)"
        )
    })?;
    let name = def.wkt.split('"').nth(1).unwrap_or("").to_string();
    Ok((def.proj4, name))
}

/// The value of `+key=` in a PROJ string.
fn param<'a>(proj: &'a str, key: &str) -> Option<&'a str> {
    proj.split_whitespace()
        .find_map(|t| t.strip_prefix('+')?.strip_prefix(key)?.strip_prefix('='))
}

/// Metres per unit of a PROJ string's linear unit.
fn proj_unit(proj: &str) -> f64 {
    if let Some(m) = param(proj, "to_meter").and_then(|v| v.parse().ok()) {
        return m;
    }
    match param(proj, "units") {
        Some("us-ft") => 1200.0 / 3937.0,
        Some("ft") => 0.3048,
        Some("km") => 1000.0,
        Some("us-yd") => 0.914401828803658,
        Some("yd") => 0.9144,
        Some("link") => 0.201168,
        Some("ch") => 20.1168,
        _ => 1.0,
    }
}

/// A PROJ string without the given parameters.
fn without(proj: &str, keys: &[&str]) -> String {
    proj.split_whitespace()
        .filter(|t| {
            let k = t.trim_start_matches('+');
            let k = k.split('=').next().unwrap_or(k);
            !keys.contains(&k)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Ellipsoids by EPSG code, as PROJ names them (the ones user-defined GeoKeys use in practice).
fn ellipsoid(code: u16) -> Option<&'static str> {
    Some(match code {
        7030 => "+ellps=WGS84",
        7019 => "+ellps=GRS80",
        7008 => "+ellps=clrk66",
        7001 => "+ellps=airy",
        7002 => "+ellps=mod_airy",
        7004 => "+ellps=bessel",
        7011 => "+ellps=clrk80ign",
        7012 => "+ellps=clrk80",
        7022 => "+ellps=intl",
        7024 => "+ellps=krass",
        7043 => "+ellps=WGS72",
        7035 | 7047 => "+a=6371007 +b=6371007",
        7059 => "+a=6378137 +b=6378137",
        _ => return None,
    })
}

/// The datum part (ellipsoid and shift) of a user-defined CRS, from the geographic keys.
fn datum_part(keys: &GeoKeys) -> Result<(String, Option<String>)> {
    let gcs = keys.short(GEOGRAPHIC_TYPE).filter(|&c| c != 0);
    let datum = keys.short(GEOG_DATUM).filter(|&c| c != 0);
    let code = match (gcs, datum) {
        (Some(g), _) if g != USER_DEFINED => Some(g),
        // EPSG's geographic CRS codes are their datum's code minus 2000 (6326 → 4326, …).
        (_, Some(d)) if d != USER_DEFINED && (6000..7000).contains(&d) => Some(d - 2000),
        _ => None,
    };
    if let Some(c) = code {
        let (proj, _) = epsg(c)?;
        return Ok((without(proj, &["proj", "no_defs", "type"]), datum_name(c)));
    }
    if let Some(e) = keys
        .short(GEOG_ELLIPSOID)
        .filter(|&e| e != USER_DEFINED)
        .and_then(ellipsoid)
    {
        return Ok((e.to_string(), None));
    }
    match (
        keys.double(GEOG_SEMI_MAJOR),
        keys.double(GEOG_INV_FLATTENING),
        keys.double(GEOG_SEMI_MINOR),
    ) {
        (Some(a), Some(rf), _) if a > 0.0 && rf > 0.0 => Ok((format!("+a={a} +rf={rf}"), None)),
        (Some(a), _, Some(b)) if a > 0.0 && b > 0.0 => Ok((format!("+a={a} +b={b}"), None)),
        (Some(a), None, None) if a > 0.0 => Ok((format!("+a={a} +b={a}"), None)),
        _ => bail!("the GeoKeys give no geographic CRS, datum or ellipsoid"),
    }
}

/// How longitude/latitude are reached from a CRS's datum: the PROJ string to use for the CRS,
/// the geographic CRS to transform to, and a note when that is not WGS 84.
fn datum_plan(proj: &str, datum_name: Option<&str>) -> (String, String, Option<String>) {
    const WGS84: &str = "+proj=longlat +datum=WGS84 +no_defs";
    let datum = param(proj, "datum");
    let ellps = param(proj, "ellps");
    let nadgrids = param(proj, "nadgrids");
    if nadgrids == Some("@null") {
        // PROJ's "no shift" grid: the spherical Web Mercator's coordinates are WGS 84's.
        return (proj.to_string(), WGS84.into(), None);
    }
    let grids = nadgrids.is_some() || datum.is_some_and(|d| d == "NAD27");
    if grids {
        // NAD27's (and any grid-based) shift needs the grids PROJ downloads; not applied.
        let ell = match datum {
            Some("NAD27") => "clrk66".to_string(),
            _ => ellps.unwrap_or("WGS84").to_string(),
        };
        let name = datum_name
            .or(datum)
            .unwrap_or("the scene's datum")
            .to_string();
        let crs = format!(
            "{} +ellps={ell}",
            without(proj, &["datum", "nadgrids", "ellps"])
        );
        let note = format!(
            "longitude/latitude are on {name}, not WGS 84: the datum shift needs grids \
             (e.g. NADCON), which are not applied (up to about 100 m off WGS 84)"
        );
        return (
            crs,
            format!("+proj=longlat +ellps={ell} +no_defs"),
            Some(note),
        );
    }
    let towgs84 = param(proj, "towgs84");
    let null_shift = towgs84.is_some_and(|t| t.split(',').all(|v| v.parse() == Ok(0.0)));
    let is_wgs84 = datum == Some("WGS84")
        || datum_name.is_some_and(|n| {
            n.eq_ignore_ascii_case("World Geodetic System 1984") || n == "WGS 1984"
        });
    // Datums whose default transformation to WGS 84 in the EPSG registry is the null one
    // (EPSG:1188, 1149, 1150, 1565, 15894): OSR's coordinates are the datum's own.
    let null_by_epsg = datum_name.is_some_and(|n| {
        [
            "North American Datum 1983",
            "European Terrestrial Reference System 1989",
            "Geocentric Datum of Australia 1994",
            "New Zealand Geodetic Datum 2000",
            "Sistema de Referencia Geocentrico para las AmericaS 2000",
        ]
        .contains(&n)
    });
    if is_wgs84
        || null_by_epsg
        || (towgs84.is_some() && !null_shift)
        || matches!(datum, Some(d) if d != "NAD83")
    {
        // WGS 84 itself, or a Helmert shift from the EPSG definition (OSGB36, DHDN, …).
        return (proj.to_string(), WGS84.into(), None);
    }
    // NAD83, ETRS89, GDA94, NAD83(HARN) …: GRS 80 datums within a metre or two of WGS 84 that
    // PROJ shifts by transformations of its own database (null for some, not for others).
    // Longitude/latitude are on the datum itself, exactly as GDAL gives them, and said so.
    let a = param(proj, "a").and_then(|v| v.parse::<f64>().ok());
    let grs80_like = matches!(ellps, Some("WGS84" | "GRS80")) || datum == Some("NAD83");
    let ell = proj
        .split_whitespace()
        .filter(|t| {
            ["+ellps=", "+a=", "+b=", "+rf=", "+R="]
                .iter()
                .any(|k| t.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join(" ");
    let ell = if ell.is_empty() && datum == Some("NAD83") {
        "+ellps=GRS80".to_string()
    } else {
        ell
    };
    let name = datum_name.unwrap_or("the scene's own datum");
    if grs80_like || (ellps.is_none() && a.is_none()) {
        let note = format!(
            "longitude/latitude are on {name}, taken as WGS 84 (the two differ by about a \
             metre or two; GDAL's transformation to WGS 84 may shift them by that much)"
        );
        let crs = format!("{} {ell}", without(proj, &["datum", "towgs84", "ellps"]));
        let lon_lat = format!("+proj=longlat {ell} +no_defs");
        return (crs, lon_lat, Some(note));
    }
    let note = format!(
        "longitude/latitude are on {name} ({ell}), not WGS 84: no datum shift is known for it \
         here (often tens to hundreds of metres)"
    );
    (
        proj.to_string(),
        format!("+proj=longlat {ell} +no_defs"),
        Some(note),
    )
}

/// A parameter in degrees: the first of `ids` present, in the file's angular unit.
struct Params<'a, 'b> {
    keys: &'a GeoKeys<'b>,
    degrees_per_unit: f64,
    metres_per_unit: f64,
}

impl Params<'_, '_> {
    fn angle(&self, ids: &[u16]) -> Option<f64> {
        ids.iter()
            .find_map(|&id| self.keys.double(id))
            .map(|v| v * self.degrees_per_unit)
    }
    fn length_m(&self, ids: &[u16]) -> f64 {
        ids.iter()
            .find_map(|&id| self.keys.double(id))
            .map_or(0.0, |v| v * self.metres_per_unit)
    }
    fn scale(&self, ids: &[u16]) -> f64 {
        ids.iter()
            .find_map(|&id| self.keys.double(id))
            .unwrap_or(1.0)
    }
}

/// The projection of a user-defined projected CRS as PROJ parameters (without datum and units).
fn projection(keys: &GeoKeys, p: &Params) -> Result<String> {
    if let Some(code) = keys
        .short(PROJECTION)
        .filter(|&c| c != USER_DEFINED && c != 0)
    {
        // EPSG's UTM conversions: 16001–16060 north, 16101–16160 south.
        return match code {
            16001..=16060 => Ok(format!("+proj=utm +zone={}", code - 16000)),
            16101..=16160 => Ok(format!("+proj=utm +zone={} +south", code - 16100)),
            _ if keys.short(PROJ_COORD_TRANS).is_none() => bail!(
                "ProjectionGeoKey {code} (an EPSG conversion) is not read here and no \
                 ProjCoordTransGeoKey spells it out"
            ),
            _ => projection_from_params(keys, p),
        };
    }
    projection_from_params(keys, p)
}

/// The ESRI PE string of a projected CRS in the citations (`ESRI PE String = PROJCS[…]`), as
/// ArcGIS writes projections GeoTIFF has no keys for.
fn esri_pe_projcs(keys: &GeoKeys) -> Option<String> {
    keys.citations()
        .into_iter()
        .find_map(|c| c.find("PROJCS[").map(|at| c[at..].to_string()))
}

/// A projection only an ESRI PE string describes, as GDAL imports it (`importFromESRI`): its
/// PROJECTION and PARAMETERs. Methods not mapped here are refused by name, never guessed.
fn projection_from_esri_pe(pe: &str, metres_per_unit: f64) -> Result<String> {
    let quoted = |after: &str| -> Option<String> {
        let at = pe.find(after)? + after.len();
        let rest = &pe[at..];
        Some(rest[..rest.find('"')?].to_string())
    };
    let method = quoted("PROJECTION[\"").ok_or_else(|| {
        anyhow!("the ESRI PE string names no PROJECTION: its CRS cannot be read exactly")
    })?;
    // ESRI's parameter names, in any case (ArcGIS and GDAL spell some differently).
    let lower = pe.to_ascii_lowercase();
    let param = |names: &[&str]| -> Option<f64> {
        names.iter().find_map(|name| {
            let key = format!("parameter[\"{name}\",");
            let at = lower.find(&key)? + key.len();
            let rest = &lower[at..];
            rest[..rest.find(']')?].trim().parse().ok()
        })
    };
    let fe = param(&["false_easting"]).unwrap_or(0.0) * metres_per_unit;
    let fn_ = param(&["false_northing"]).unwrap_or(0.0) * metres_per_unit;
    Ok(match method.as_str() {
        // ESRI's geostationary view sweeps along y (GDAL: "Geostationary Satellite (Sweep Y)");
        // its Option 0 (or none) is that view, any other is refused.
        "Geostationary_Satellite" if param(&["option"]).unwrap_or(0.0) == 0.0 => format!(
            "+proj=geos +h={} +lon_0={} +sweep=y +x_0={fe} +y_0={fn_}",
            param(&["satellite_height", "height"]).ok_or_else(|| anyhow!(
                "the ESRI PE string's geostationary view has no satellite height"
            ))?,
            param(&["central_meridian", "longitude_of_center"]).unwrap_or(0.0),
        ),
        m => bail!(
            "the projection {m:?} of the file's ESRI PE string is not read here (only GDAL reads \
             it: --reader gdal, or reproject the scene with gdalwarp -t_srs EPSG:…)"
        ),
    })
}

fn projection_from_params(keys: &GeoKeys, p: &Params) -> Result<String> {
    let Some(ct) = keys.short(PROJ_COORD_TRANS) else {
        if let Some(pe) = esri_pe_projcs(keys) {
            return projection_from_esri_pe(&pe, p.metres_per_unit);
        }
        bail!("a user-defined projected CRS without ProjCoordTransGeoKey");
    };
    let lon = |ids: &[u16]| p.angle(ids).unwrap_or(0.0);
    let nat_lon = lon(&[NAT_ORIGIN_LONG, FALSE_ORIGIN_LONG, CENTER_LONG]);
    let nat_lat = lon(&[NAT_ORIGIN_LAT, FALSE_ORIGIN_LAT, CENTER_LAT]);
    let center_lon = lon(&[CENTER_LONG, NAT_ORIGIN_LONG, FALSE_ORIGIN_LONG]);
    let center_lat = lon(&[CENTER_LAT, NAT_ORIGIN_LAT, FALSE_ORIGIN_LAT]);
    let fe = p.length_m(&[FALSE_EASTING, CENTER_EASTING, FALSE_ORIGIN_EASTING]);
    let fn_ = p.length_m(&[FALSE_NORTHING, CENTER_NORTHING, FALSE_ORIGIN_NORTHING]);
    let k = p.scale(&[SCALE_AT_NAT_ORIGIN, SCALE_AT_CENTER]);
    let sp1 = p.angle(&[STD_PARALLEL_1]);
    let sp2 = p.angle(&[STD_PARALLEL_2]);
    let esri_aux_sphere = keys
        .citations()
        .iter()
        .any(|c| c.contains("Mercator_Auxiliary_Sphere"));
    let xy = format!("+x_0={fe} +y_0={fn_}");
    Ok(match ct {
        1 => format!("+proj=tmerc +lat_0={nat_lat} +lon_0={nat_lon} +k={k} {xy}"),
        7 if esri_aux_sphere => format!("+proj=webmerc +lat_0=0 +lon_0={nat_lon} {xy}"),
        7 => match sp1 {
            Some(ts) if ts != 0.0 => format!("+proj=merc +lat_ts={ts} +lon_0={nat_lon} {xy}"),
            _ => format!("+proj=merc +lon_0={nat_lon} +k={k} {xy}"),
        },
        8 => {
            // Lambert 2SP: the false origin, falling back to the natural origin's keys.
            let lat0 = lon(&[FALSE_ORIGIN_LAT, NAT_ORIGIN_LAT, CENTER_LAT]);
            let lon0 = lon(&[FALSE_ORIGIN_LONG, NAT_ORIGIN_LONG, CENTER_LONG]);
            let e = p.length_m(&[FALSE_ORIGIN_EASTING, FALSE_EASTING]);
            let n = p.length_m(&[FALSE_ORIGIN_NORTHING, FALSE_NORTHING]);
            format!(
                "+proj=lcc +lat_1={} +lat_2={} +lat_0={lat0} +lon_0={lon0} +x_0={e} +y_0={n}",
                sp1.unwrap_or(lat0),
                sp2.unwrap_or(sp1.unwrap_or(lat0))
            )
        }
        9 => format!("+proj=lcc +lat_1={nat_lat} +lat_0={nat_lat} +lon_0={nat_lon} +k_0={k} {xy}"),
        10 => format!("+proj=laea +lat_0={center_lat} +lon_0={center_lon} {xy}"),
        11 => format!(
            "+proj=aea +lat_1={} +lat_2={} +lat_0={nat_lat} +lon_0={nat_lon} {xy}",
            sp1.unwrap_or(0.0),
            sp2.unwrap_or(0.0)
        ),
        12 => format!("+proj=aeqd +lat_0={center_lat} +lon_0={center_lon} {xy}"),
        13 => format!(
            "+proj=eqdc +lat_1={} +lat_2={} +lat_0={center_lat} +lon_0={center_lon} {xy}",
            sp1.unwrap_or(0.0),
            sp2.unwrap_or(0.0)
        ),
        14 => format!("+proj=stere +lat_0={center_lat} +lon_0={center_lon} +k={k} {xy}"),
        15 => {
            let pole = if nat_lat < 0.0 { -90.0 } else { 90.0 };
            let lon0 = lon(&[STRAIGHT_VERT_POLE_LONG, NAT_ORIGIN_LONG]);
            if nat_lat.abs() == 90.0 {
                format!("+proj=stere +lat_0={pole} +lon_0={lon0} +k={k} {xy}")
            } else {
                format!("+proj=stere +lat_0={pole} +lat_ts={nat_lat} +lon_0={lon0} {xy}")
            }
        }
        16 => format!("+proj=sterea +lat_0={nat_lat} +lon_0={nat_lon} +k={k} {xy}"),
        17 => format!(
            "+proj=eqc +lat_ts={} +lat_0={nat_lat} +lon_0={nat_lon} {xy}",
            sp1.unwrap_or(0.0)
        ),
        18 => format!("+proj=cass +lat_0={nat_lat} +lon_0={nat_lon} {xy}"),
        20 => format!("+proj=mill +lon_0={center_lon} {xy}"),
        21 => format!("+proj=ortho +lat_0={center_lat} +lon_0={center_lon} {xy}"),
        22 => format!("+proj=poly +lat_0={nat_lat} +lon_0={nat_lon} {xy}"),
        23 => format!("+proj=robin +lon_0={center_lon} {xy}"),
        24 => format!("+proj=sinu +lon_0={center_lon} {xy}"),
        28 => format!(
            "+proj=cea +lat_ts={} +lon_0={nat_lon} {xy}",
            sp1.unwrap_or(0.0)
        ),
        _ => bail!(
            "the projection method (ProjCoordTransGeoKey {ct}) is not supported; reproject the \
             scene (gdalwarp -t_srs EPSG:…)"
        ),
    })
}

/// The CRS of a GeoKey directory, as GDAL reads it.
pub fn from_geokeys(keys: &GeoKeys) -> Result<Crs> {
    let model = keys.short(GT_MODEL_TYPE);
    if model == Some(3) {
        bail!("a geocentric CRS (GTModelTypeGeoKey 3): not a map");
    }
    let projected = match model {
        Some(1) => true,
        Some(2) => false,
        // User-defined or missing: projected when any projection key is there, or (as GDAL
        // reads such files) when a citation holds an ESRI PE string of a projected CRS.
        _ => {
            [PROJECTED_CS_TYPE, PROJECTION, PROJ_COORD_TRANS]
                .iter()
                .any(|&k| keys.short(k).is_some())
                || esri_pe_projcs(keys).is_some()
        }
    };
    let degrees_per_unit = match keys.short(GEOG_ANGULAR_UNITS) {
        None | Some(0) => 1.0,
        Some(USER_DEFINED) => keys
            .double(GEOG_ANGULAR_UNIT_SIZE)
            .map(|rad| rad.to_degrees())
            .ok_or_else(|| anyhow!("a user-defined angular unit without its size"))?,
        Some(c) => angular_unit(c).ok_or_else(|| {
            anyhow!("GeogAngularUnitsGeoKey {c} is not an angular unit known here")
        })?,
    };
    if !projected {
        let code = keys
            .short(GEOGRAPHIC_TYPE)
            .filter(|&c| c != 0 && c != USER_DEFINED);
        let (proj, name, epsg_code, datum) = match code {
            Some(c) => {
                let (p, n) = epsg(c)?;
                (
                    p.to_string(),
                    format!("EPSG:{c} ({n})"),
                    Some(c as u32),
                    datum_name(c),
                )
            }
            None => {
                let (d, datum) = datum_part(keys)?;
                (
                    format!("+proj=longlat {d} +no_defs"),
                    format!("a user-defined geographic CRS ({d})"),
                    None,
                    datum,
                )
            }
        };
        let unit_note = if degrees_per_unit != 1.0 {
            format!(" in units of {degrees_per_unit}°")
        } else {
            String::new()
        };
        let (proj, lon_lat, datum_note) = datum_plan(&proj, datum.as_deref());
        return Ok(Crs {
            proj,
            lon_lat,
            geographic: true,
            degrees_per_unit,
            epsg: epsg_code.filter(|_| degrees_per_unit == 1.0),
            name: format!("{name}{unit_note}"),
            datum_note,
        });
    }
    // The linear unit the file states: the key, else a citation.
    let stated: Option<(f64, String)> = match keys.short(PROJ_LINEAR_UNITS) {
        Some(USER_DEFINED) => Some((
            keys.double(PROJ_LINEAR_UNIT_SIZE)
                .filter(|&m| m > 0.0)
                .ok_or_else(|| anyhow!("a user-defined linear unit without its size"))?,
            "a user-defined unit".into(),
        )),
        Some(c) if c != 0 => {
            let (m, n) = linear_unit(c).ok_or_else(|| {
                anyhow!("ProjLinearUnitsGeoKey {c} is not a linear unit known here")
            })?;
            Some((m, n.to_string()))
        }
        _ => citation_unit(&keys.citations())?,
    };
    let pcs = keys
        .short(PROJECTED_CS_TYPE)
        .filter(|&c| c != 0 && c != USER_DEFINED);
    let spelled_out = keys.short(PROJ_COORD_TRANS).is_some();
    let (proj, name, epsg_code, datum) = match pcs {
        Some(code) if !spelled_out => {
            let (def, wkt_name) = epsg(code)?;
            let own = proj_unit(def);
            match stated {
                Some((m, unit)) if (m - own).abs() > 1e-12 * own => (
                    // GDAL keeps the EPSG parameters' lengths and changes only the axes' unit.
                    format!(
                        "{} +to_meter={m}",
                        without(def, &["units", "to_meter", "no_defs", "type"])
                    ),
                    format!("EPSG:{code} ({wkt_name}) in the unit {unit}, as the file's keys say"),
                    None,
                    datum_name(code),
                ),
                _ => (
                    def.to_string(),
                    format!("EPSG:{code} ({wkt_name})"),
                    Some(code as u32),
                    datum_name(code),
                ),
            }
        }
        _ => {
            let metres_per_unit = stated.as_ref().map_or(1.0, |s| s.0);
            let p = Params {
                keys,
                degrees_per_unit,
                metres_per_unit,
            };
            let projection = projection(keys, &p)?;
            let (datum_proj, datum) = datum_part(keys)?;
            let unit = stated.as_ref().map_or("metre".to_string(), |s| s.1.clone());
            let cited = keys
                .citations()
                .into_iter()
                .next()
                .map(|c| format!(" {:?}", c.chars().take(60).collect::<String>()))
                .unwrap_or_default();
            (
                format!("{projection} {datum_proj} +to_meter={metres_per_unit} +no_defs"),
                format!("a user-defined projected CRS{cited} in the unit {unit}"),
                None,
                datum,
            )
        }
    };
    let (proj, lon_lat, datum_note) = datum_plan(&proj, datum.as_deref());
    Ok(Crs {
        proj,
        lon_lat,
        geographic: false,
        degrees_per_unit: 1.0,
        epsg: epsg_code,
        name,
        datum_note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(keys: &[(u16, u16, u16, u16)]) -> Vec<u16> {
        let mut d = vec![1, 1, 0, keys.len() as u16];
        for &(a, b, c, e) in keys {
            d.extend([a, b, c, e]);
        }
        d
    }

    #[test]
    fn esri_pe_projections_are_read_where_known_and_refused_by_name_elsewhere() {
        let geos = "ESRI PE String = PROJCS[\"x\",GEOGCS[\"g\",DATUM[\"D\",SPHEROID[\"s\",6378160,298.25]],\
            PRIMEM[\"Greenwich\",0],UNIT[\"Degree\",0.0174532925199433]],PROJECTION[\"Geostationary_Satellite\"],\
            PARAMETER[\"False_Easting\",0.0],PARAMETER[\"Longitude_Of_Center\",9.5],\
            PARAMETER[\"Height\",35785831.0],PARAMETER[\"Option\",0.0],UNIT[\"Meter\",1.0]]";
        let p = projection_from_esri_pe(geos, 1.0).unwrap();
        assert!(
            p.contains("+proj=geos +h=35785831 +lon_0=9.5 +sweep=y"),
            "{p}"
        );
        let bonne = geos.replace("Geostationary_Satellite", "Bonne");
        let e = projection_from_esri_pe(&bonne, 1.0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"Bonne\"") && e.contains("--reader gdal"),
            "{e}"
        );
        // A model type that is user-defined with a PE string is projected, as GDAL reads it.
        let d = dir(&[
            (1024, 0, 1, 32767),
            (2057, 34736, 1, 0),
            (2059, 34736, 1, 1),
            (3073, 34737, geos.len() as u16 + 1, 0),
        ]);
        let ascii = format!("{geos}|");
        let c = from_geokeys(&GeoKeys {
            directory: &d,
            doubles: &[6378160.0, 298.25],
            ascii: &ascii,
        })
        .unwrap();
        assert!(!c.geographic && c.proj.contains("+proj=geos"), "{c:?}");
    }

    #[test]
    fn a_pcs_code_with_a_foot_unit_keeps_its_false_easting_in_metres() {
        let d = dir(&[(1024, 0, 1, 1), (3072, 0, 1, 2853), (3076, 0, 1, 9003)]);
        let c = from_geokeys(&GeoKeys {
            directory: &d,
            doubles: &[],
            ascii: "",
        })
        .unwrap();
        assert!(c.proj.contains("+x_0=3500000"), "{}", c.proj);
        assert!(c.proj.contains(&format!("+to_meter={}", 1200.0 / 3937.0)));
        assert_eq!(c.epsg, None, "a redefined code is not named as the code");
        assert!(c.name.contains("US survey foot"), "{}", c.name);
    }

    #[test]
    fn units_named_in_citations_are_read_in_any_case_and_unknown_ones_refused() {
        let imagine = "IMAGINE GeoTIFF Support\nProjection Name = x\nUnits = international_FeeT";
        assert_eq!(citation_unit(&[imagine.into()]).unwrap().unwrap().0, 0.3048);
        assert_eq!(
            citation_unit(&["LUnits = us_survey_feet".into()])
                .unwrap()
                .unwrap()
                .0,
            1200.0 / 3937.0
        );
        assert!(
            citation_unit(&["WGS 84 / UTM zone 33N".into()])
                .unwrap()
                .is_none()
        );
        assert!(citation_unit(&["Units = cubits".into()]).is_err());
    }

    #[test]
    fn nad27_is_flagged_not_passed_off_as_wgs84() {
        let d = dir(&[(1024, 0, 1, 1), (3072, 0, 1, 26711)]);
        let c = from_geokeys(&GeoKeys {
            directory: &d,
            doubles: &[],
            ascii: "",
        })
        .unwrap();
        assert!(c.proj.contains("+ellps=clrk66") && !c.proj.contains("NAD27"));
        assert!(c.lon_lat.contains("clrk66"));
        assert!(c.datum_note.unwrap().contains("1927"));
        assert_eq!(c.epsg, Some(26711));
    }
}
